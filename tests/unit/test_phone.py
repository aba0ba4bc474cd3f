import pytest

from airtime.accounts.phone import format_msisdn, luhn_complete, mask_msisdn, normalize_msisdn, validate_iccid
from airtime.errors import ValidationFailed


@pytest.mark.parametrize(
    ("typed", "region", "e164"),
    [
        ("+44 7911 123456", "GB", "+447911123456"),
        ("07911 123456", "GB", "+447911123456"),
        ("0044 7911-123456", "US", "+447911123456"),
        ("+86 138 0013 8000", "GB", "+8613800138000"),
        ("138 0013 8000", "CN", "+8613800138000"),
    ],
)
def test_numbers_are_normalised_to_e164(typed, region, e164):
    assert normalize_msisdn(typed, default_region=region) == e164


@pytest.mark.parametrize("typed", ["", "   ", "abc", "+44", "+1 555", "+999 123456789", "1" * 41])
def test_invalid_numbers_are_refused_with_a_clear_message(typed):
    with pytest.raises(ValidationFailed) as refused:
        normalize_msisdn(typed, default_region="GB")
    assert refused.value.params["field"] == "msisdn"
    assert "number" in refused.value.detail


def test_formatting_and_masking():
    assert format_msisdn("+447911123456") == "+44 7911 123456"
    masked = mask_msisdn("+447911123456")
    assert masked.startswith("+447") and masked.endswith("456") and "911123" not in masked


def test_iccid_checks_prefix_length_and_luhn():
    iccid = luhn_complete("894400000000000001")
    assert validate_iccid(iccid) == iccid
    wrong_check_digit = iccid[:-1] + str((int(iccid[-1]) + 1) % 10)
    for bad in [wrong_check_digit, "123", "99" + iccid[2:]]:
        with pytest.raises(ValidationFailed):
            validate_iccid(bad)
