//! Paid chat over x402: the offer and local verification of payments.
//!
//! Order of a paid turn, never otherwise: verify locally → claim the nonce in the store →
//! run the turn (an execution of kind `paid`) → settle → only then hand over the reply.
//! A failed turn is never settled; a failed settlement withholds the reply.

pub mod eip712;
pub mod evm;
pub mod header;
pub mod offer;
pub mod verify;

pub use offer::Offer;

/// Why a payment was refused: the x402 error code of the 402.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    PaymentRequired,
    InvalidPayload,
    InvalidRequirements,
    UnsupportedScheme,
    RecipientMismatch,
    ValueMismatch,
    ValidAfter,
    ValidBefore,
    Signature,
    NonceUsed,
    RejectedByFacilitator,
    FacilitatorUnavailable,
    SettlementFailed,
}

impl Reason {
    /// The stable code, as x402 clients know it.
    pub fn code(self) -> &'static str {
        match self {
            Reason::PaymentRequired => "payment_required",
            Reason::InvalidPayload => "invalid_payload",
            Reason::InvalidRequirements => "invalid_payment_requirements",
            Reason::UnsupportedScheme => "unsupported_scheme",
            Reason::RecipientMismatch => "invalid_exact_evm_payload_recipient_mismatch",
            Reason::ValueMismatch => "invalid_exact_evm_payload_authorization_value_mismatch",
            Reason::ValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
            Reason::ValidBefore => "invalid_exact_evm_payload_authorization_valid_before",
            Reason::Signature => "invalid_exact_evm_payload_signature",
            Reason::NonceUsed => "invalid_exact_evm_nonce_already_used",
            Reason::RejectedByFacilitator => "payment_rejected",
            Reason::FacilitatorUnavailable => "facilitator_unavailable",
            Reason::SettlementFailed => "settlement_failed",
        }
    }
}
