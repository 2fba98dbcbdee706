//! Local x402 verification speed: the whole check of one payment header (decode, offer,
//! amount, time window, EIP-712 digest, signer recovery) in a loop on one core.

use outpost::config::{builtin_networks, PaidConfig};
use outpost::paid::evm::{parse_uint256, Address};
use outpost::paid::verify::verify;
use outpost::paid::Offer;
use serde_json::json;
use std::time::{Duration, Instant};

/// The x402 contract's test vector: a valid payment 200 s before its `validBefore`.
const NOW: u64 = 1_899_999_800;
const PAYER: &str = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A";
const PAYEE: &str = "0x1563915e194D8CfBA1943570603F7606A3115508";
const NONCE: &str = "0xc78bf66f6c3766ec7563452ef340be1013825f8c7b81ebd7666f7464a2848f13";
const SIGNATURE: &str = "0x6c45a2c1622c91513fe1e536c0442c1595c5c33264f86fb3533cb237b84dd6446e61f2f2a59c106d39a2957f80fd51132af9b28356885ab6bae726e8501169261c";

/// Verifications per second on the calling thread, over `duration`.
pub fn verifications_per_second(duration: Duration) -> anyhow::Result<f64> {
    let offer = Offer {
        agent: "helper".into(),
        config: PaidConfig {
            price: "10000".into(),
            price_word: parse_uint256("10000").expect("a decimal"),
            network: builtin_networks()["eip155:84532"].clone(),
            pay_to: Address::parse(PAYEE).expect("an address"),
            description: "One chat turn with helper".into(),
            max_timeout_seconds: 300,
            facilitator_url: "http://127.0.0.1:9".into(),
            facilitator_auth_header: None,
            verify_with_facilitator: false,
            settle_timeout: Duration::from_secs(1),
            verify_timeout: Duration::from_secs(1),
        },
        resource: "http://127.0.0.1:8000/api/paid/helper/chat".into(),
    };
    let payment = json!({
        "x402Version": 2,
        "accepted": offer.requirement_v2(),
        "payload": {
            "signature": SIGNATURE,
            "authorization": {
                "from": PAYER, "to": PAYEE, "value": "10000",
                "validAfter": "0", "validBefore": "1900000000", "nonce": NONCE,
            },
        },
    });
    let header = outpost::paid::header::encode(&payment);
    verify(&header, &offer, NOW).map_err(|(_, why)| anyhow::anyhow!("the vector fails: {why}"))?;
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < duration {
        for _ in 0..100 {
            let verified = verify(&header, &offer, NOW);
            std::hint::black_box(verified.is_ok());
        }
        count += 100;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}
