"""Which payment providers this installation offers, from settings."""

from __future__ import annotations

from airtime.config import Settings
from airtime.errors import ValidationFailed
from airtime.payments.base import PaymentProvider
from airtime.payments.sandbox import SandboxProvider


def providers_from_settings(settings: Settings) -> dict[str, PaymentProvider]:
    """Provider name → provider; the sandbox is offered unless production turns it off."""
    providers: dict[str, PaymentProvider] = {}
    if settings.payment_sandbox_enabled:
        providers["sandbox"] = SandboxProvider(base_url=settings.base_url)
    if settings.stripe_secret_key:
        from airtime.payments.stripe_provider import StripeProvider

        providers["stripe"] = StripeProvider.from_settings(settings)
    if settings.paypal_client_id:
        from airtime.payments.paypal_provider import PayPalProvider

        providers["paypal"] = PayPalProvider.from_settings(settings)
    return providers


def provider_named(providers: dict[str, PaymentProvider], name: str) -> PaymentProvider:
    provider = providers.get(name)
    if provider is None:
        raise ValidationFailed(
            "Unknown payment method %(name)s; choose one of: %(names)s.",
            name=name[:20],
            names=", ".join(providers) or "-",
            field="provider",
        )
    return provider


def providers_saving_methods(providers: dict[str, PaymentProvider]) -> dict[str, PaymentProvider]:
    """The providers that can keep a payment method for off-session charges (auto top-up)."""
    return {name: provider for name, provider in providers.items() if provider.saves_methods}
