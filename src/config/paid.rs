//! `[agents.NAME.paid]` — the price of a turn in x402 terms — and the network table
//! (`[paid.networks."eip155:…"]`), with Base and Base Sepolia USDC built in.
//! Pure parsing: nothing here reaches the network.

use super::{bounds, invalid, Error, Secret};
use crate::evm::{parse_uint256, Address, Word};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The `[paid]` section: networks beyond (or replacing) the built-in ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPaidSection {
    pub networks: BTreeMap<String, RawNetwork>,
}

/// One network as written: `[paid.networks."eip155:10"]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub v1_name: String,
    pub chain_id: u64,
    pub asset: String,
    pub name: String,
    pub version: String,
}

/// An agent's `paid` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaid {
    pub price: String,
    pub network: String,
    pub pay_to: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "default_max_timeout")]
    pub max_timeout_seconds: u64,
    pub facilitator_url: String,
    #[serde(default)]
    pub facilitator_auth_header: Option<String>,
    #[serde(default = "default_verify_with_facilitator")]
    pub verify_with_facilitator: bool,
    #[serde(default = "default_unverified_turns_per_minute")]
    pub unverified_turns_per_minute: u32,
    #[serde(default = "default_settle_timeout")]
    pub settle_timeout_s: u64,
    #[serde(default = "default_verify_timeout")]
    pub verify_timeout_s: u64,
}

fn default_max_timeout() -> u64 {
    300
}
/// Only the facilitator knows whether the payer holds the funds: asking it before the turn
/// is what keeps an unfunded payer from getting model work for a signature alone.
fn default_verify_with_facilitator() -> bool {
    true
}
fn default_unverified_turns_per_minute() -> u32 {
    4
}
fn default_settle_timeout() -> u64 {
    30
}
fn default_verify_timeout() -> u64 {
    10
}

/// A chain and its USDC contract: what the signature's EIP-712 domain is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// CAIP-2 id, e.g. `eip155:84532` (x402 v2).
    pub id: String,
    /// The x402 v1 name, e.g. `base-sepolia`.
    pub v1_name: String,
    pub chain_id: u64,
    /// The token contract (`verifyingContract`).
    pub asset: Address,
    /// EIP-712 domain name and version of the token.
    pub name: String,
    pub version: String,
}

/// The built-in networks: Base and Base Sepolia USDC.
pub fn builtin_networks() -> BTreeMap<String, Network> {
    let network = |id: &str, v1: &str, chain_id, asset: &str, name: &str| Network {
        id: id.into(),
        v1_name: v1.into(),
        chain_id,
        asset: Address::parse(asset).expect("built-in addresses parse"),
        name: name.into(),
        version: "2".into(),
    };
    [
        network(
            "eip155:8453",
            "base",
            8453,
            "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
            "USD Coin",
        ),
        network(
            "eip155:84532",
            "base-sepolia",
            84532,
            "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "USDC",
        ),
    ]
    .into_iter()
    .map(|n| (n.id.clone(), n))
    .collect()
}

/// The network table: the built-in networks, then the file's (which may replace them).
pub fn networks(raw: RawPaidSection) -> Result<BTreeMap<String, Network>, Error> {
    let mut table = builtin_networks();
    for (id, network) in raw.networks {
        let key = format!("paid.networks.\"{id}\"");
        if !id.starts_with("eip155:") {
            return Err(invalid(
                key,
                "network ids are CAIP-2 EVM ids such as \"eip155:8453\"",
            ));
        }
        let asset = Address::parse(&network.asset)
            .filter(|a| !a.is_zero())
            .ok_or_else(|| {
                invalid(
                    format!("{key}.asset"),
                    "must be a 0x address of 40 hex digits",
                )
            })?;
        if network.chain_id == 0 {
            return Err(invalid(format!("{key}.chain_id"), "must be greater than 0"));
        }
        table.insert(
            id.clone(),
            Network {
                id,
                v1_name: network.v1_name,
                chain_id: network.chain_id,
                asset,
                name: network.name,
                version: network.version,
            },
        );
    }
    Ok(table)
}

/// An agent's price and where its payments settle.
#[derive(Clone, Debug, PartialEq)]
pub struct PaidConfig {
    /// Atomic units of the asset, as written (canonical decimal).
    pub price: String,
    /// The same as a uint256 word.
    pub price_word: Word,
    pub network: Network,
    pub pay_to: Address,
    pub description: String,
    /// How long a signed authorization may run: covers model time and settlement.
    pub max_timeout_seconds: u64,
    /// The facilitator's base URL (`/settle`, `/verify` under it).
    pub facilitator_url: String,
    /// Sent as `Authorization` to the facilitator.
    pub facilitator_auth_header: Option<Secret>,
    /// Ask the facilitator's `/verify` (funds, nonce on chain) before the turn runs.
    pub verify_with_facilitator: bool,
    /// Without `verify_with_facilitator`: how many turns a minute may start without being
    /// paid for yet (running, or their settlement failed), over all payers.
    pub unverified_turns_per_minute: u32,
    pub settle_timeout: Duration,
    pub verify_timeout: Duration,
}

/// The second stage of `agents.NAME.paid`.
pub fn resolve(
    agent: &str,
    raw: RawPaid,
    networks: &BTreeMap<String, Network>,
) -> Result<PaidConfig, Error> {
    let key = |field: &str| format!("agents.{agent}.paid.{field}");
    let price_word = parse_uint256(&raw.price)
        .filter(|w| *w != [0; 32])
        .ok_or_else(|| {
            invalid(
                key("price"),
                "must be a whole number of atomic units above 0, such as \"10000\"",
            )
        })?;
    let network = networks.get(&raw.network).cloned().ok_or_else(|| {
        let known: Vec<&str> = networks.keys().map(String::as_str).collect();
        invalid(
            key("network"),
            format!(
                "{:?} is not one of {known:?} (add it under [paid.networks])",
                raw.network
            ),
        )
    })?;
    let pay_to = Address::parse(&raw.pay_to)
        .filter(|a| !a.is_zero())
        .ok_or_else(|| invalid(key("pay_to"), "must be a 0x address of 40 hex digits"))?;
    if raw.max_timeout_seconds == 0 || raw.max_timeout_seconds > 86_400 {
        return Err(invalid(
            key("max_timeout_seconds"),
            "must be from 1 to 86400",
        ));
    }
    let url = raw.facilitator_url.trim_end_matches('/').to_string();
    match url.parse::<hyper::Uri>() {
        Ok(uri) if crate::outbound::check_url(&uri).is_ok() => {}
        _ => {
            return Err(invalid(
                key("facilitator_url"),
                format!(
                    "{:?} is not an http:// or https:// URL",
                    raw.facilitator_url
                ),
            ));
        }
    }
    bounds::UNVERIFIED_TURNS_PER_MINUTE
        .check(
            "unverified_turns_per_minute",
            u64::from(raw.unverified_turns_per_minute),
        )
        .map_err(|m| invalid(key("unverified_turns_per_minute"), m))?;
    for (field, value) in [
        ("settle_timeout_s", raw.settle_timeout_s),
        ("verify_timeout_s", raw.verify_timeout_s),
    ] {
        bounds::PAID_CALL_TIMEOUT_SECONDS
            .check(field, value)
            .map_err(|m| invalid(key(field), m))?;
    }
    Ok(PaidConfig {
        price: raw.price,
        price_word,
        network,
        pay_to,
        description: raw
            .description
            .unwrap_or_else(|| format!("One chat turn with {agent}")),
        max_timeout_seconds: raw.max_timeout_seconds,
        facilitator_url: url,
        facilitator_auth_header: raw
            .facilitator_auth_header
            .filter(|h| !h.is_empty())
            .map(Secret),
        verify_with_facilitator: raw.verify_with_facilitator,
        unverified_turns_per_minute: raw.unverified_turns_per_minute,
        settle_timeout: Duration::from_secs(raw.settle_timeout_s),
        verify_timeout: Duration::from_secs(raw.verify_timeout_s),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Config};

    const PAID: &str = "[agents.helper.paid]\nprice = \"10000\"\nnetwork = \"eip155:84532\"\npay_to = \"0x1563915e194D8CfBA1943570603F7606A3115508\"\nfacilitator_url = \"http://127.0.0.1:8402\"\n";

    fn check(text: &str, expected: Result<(), &str>) {
        let result = parse(text)
            .and_then(|raw| Config::from_raw(raw).map(|_| ()).map_err(|e| e.to_string()));
        match (result, expected) {
            (Ok(()), Ok(())) => {}
            (Err(got), Err(want)) => assert!(got.contains(want), "{got:?} lacks {want:?}"),
            (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn paid_sections() {
        check(PAID, Ok(()));
        check(
            &PAID.replace("\"10000\"", "\"1e4\""),
            Err("agents.helper.paid.price"),
        );
        check(
            &PAID.replace("\"10000\"", "\"0\""),
            Err("agents.helper.paid.price"),
        );
        check(
            &PAID.replace("eip155:84532", "eip155:1"),
            Err("agents.helper.paid.network"),
        );
        check(
            &PAID.replace("0x1563", "0x15"),
            Err("agents.helper.paid.pay_to"),
        );
        check(&PAID.replace("http://127", "https://127"), Ok(()));
        check(
            &PAID.replace("http://127", "ftp://127"),
            Err("agents.helper.paid.facilitator_url"),
        );
        check(
            &format!("{PAID}colour = \"red\"\n"),
            Err("unknown field `colour`"),
        );
        check(
            &format!("{PAID}max_timeout_seconds = 0\n"),
            Err("max_timeout_seconds"),
        );
        check(
            &format!("{PAID}unverified_turns_per_minute = 0\n"),
            Err("agents.helper.paid.unverified_turns_per_minute"),
        );
        let extended = format!(
            "[paid.networks.\"eip155:1\"]\nv1_name = \"ethereum\"\nchain_id = 1\nasset = \"0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48\"\nname = \"USD Coin\"\nversion = \"2\"\n{}",
            PAID.replace("eip155:84532", "eip155:1")
        );
        check(&extended, Ok(()));
    }

    #[test]
    fn the_resolved_section_carries_the_network() {
        let config = Config::from_raw(parse(PAID).unwrap()).unwrap();
        let paid = config.agents[0].paid.as_ref().unwrap();
        assert_eq!(paid.network.chain_id, 84532);
        assert_eq!(paid.network.v1_name, "base-sepolia");
        assert_eq!(paid.network.name, "USDC");
        assert_eq!(paid.max_timeout_seconds, 300);
        assert_eq!(paid.description, "One chat turn with helper");
        assert!(
            paid.verify_with_facilitator,
            "the facilitator checks funds by default"
        );
    }
}
