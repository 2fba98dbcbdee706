//! What an agent asks for a turn, in both protocol versions: the v2 requirement (in the
//! `PAYMENT-REQUIRED` header and `/info`), the v1 requirement (in the 402 body), and receipts.

use crate::config::PaidConfig;
use serde_json::{json, Value};

/// One agent's offer for one route.
#[derive(Clone, Debug)]
pub struct Offer {
    pub agent: String,
    pub config: PaidConfig,
    /// The absolute URL of the paid route.
    pub resource: String,
}

impl Offer {
    /// The v2 requirement: what a client echoes back as `accepted`.
    pub fn requirement_v2(&self) -> Value {
        let c = &self.config;
        json!({
            "scheme": "exact",
            "network": c.network.id,
            "amount": c.price,
            "asset": c.network.asset.checksummed(),
            "payTo": c.pay_to.checksummed(),
            "maxTimeoutSeconds": c.max_timeout_seconds,
            "extra": {"name": c.network.name, "version": c.network.version},
        })
    }

    /// The v1 requirement (never `"outputSchema": null`: it is left out).
    pub fn requirement_v1(&self) -> Value {
        let c = &self.config;
        json!({
            "scheme": "exact",
            "network": c.network.v1_name,
            "maxAmountRequired": c.price,
            "resource": self.resource,
            "description": c.description,
            "mimeType": "application/json",
            "payTo": c.pay_to.checksummed(),
            "maxTimeoutSeconds": c.max_timeout_seconds,
            "asset": c.network.asset.checksummed(),
            "extra": {"name": c.network.name, "version": c.network.version},
        })
    }

    /// The requirement in the client's protocol version.
    pub fn requirement(&self, version: u8) -> Value {
        if version == 1 {
            self.requirement_v1()
        } else {
            self.requirement_v2()
        }
    }

    /// The v2 `resource` object.
    pub fn resource(&self) -> Value {
        json!({
            "url": self.resource,
            "description": self.config.description,
            "mimeType": "application/json",
        })
    }

    /// The JSON of the `PAYMENT-REQUIRED` header, naming why payment is (still) required.
    pub fn payment_required(&self, error: &str) -> Value {
        json!({
            "x402Version": 2,
            "error": error,
            "resource": self.resource(),
            "accepts": [self.requirement_v2()],
            "extensions": {},
        })
    }

    /// The `accepts` list of the v1 402 body.
    pub fn v1_accepts(&self) -> Value {
        json!([self.requirement_v1()])
    }

    /// `GET /api/paid/{agent}/info`.
    pub fn info(&self) -> Value {
        json!({
            "agent": self.agent,
            "description": self.config.description,
            "x402Version": 2,
            "price": {
                "amount": self.config.price,
                "asset": self.config.network.asset.checksummed(),
                "network": self.config.network.id,
            },
            "accepts": [self.requirement_v2()],
            "resource": self.resource(),
        })
    }

    /// The network as the client's protocol version names it.
    pub fn network_name(&self, version: u8) -> &str {
        if version == 1 {
            &self.config.network.v1_name
        } else {
            &self.config.network.id
        }
    }
}
