"""Phone channels: USSD menus and IVR calls that top up by voucher and buy bundles."""
