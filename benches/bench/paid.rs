//! x402 in the bench: local verification speed (the whole check of one payment header in a
//! loop on one core), and the latency a paid turn adds over an unpaid one on the same agent,
//! each paid turn with a freshly signed payment and settled by the instant facilitator stub.

use crate::client::{field, Call, Conn};
use crate::daemon::{Daemon, PAID_AGENT};
use crate::facilitator::Facilitator;
use crate::load::{self, Stats};
use anyhow::Context;
use hyper::StatusCode;
use k256::ecdsa::SigningKey;
use outpost::config::{builtin_networks, PaidConfig};
use outpost::evm::{hex, parse_uint256, u64_word, Address};
use outpost::paid::eip712::{Authorization, Domain};
use outpost::paid::verify::verify;
use outpost::paid::Offer;
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The x402 contract's test vector: a valid payment 200 s before its `validBefore`.
const NOW: u64 = 1_899_999_800;
const PAYER: &str = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A";
/// The vector's payer key (32 × 0x11, never funded), which signs the bench's payments.
const PAYER_KEY: [u8; 32] = [0x11; 32];
pub const PAYEE: &str = "0x1563915e194D8CfBA1943570603F7606A3115508";
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
            unverified_turns_per_minute: 4,
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

/// Turns in each of the two sequential runs, unpaid then paid.
pub const PAID_TURNS: u64 = 1_000;
/// The longest either run may take.
const TURNS_LIMIT: Duration = Duration::from_secs(120);
/// How long each payment stays valid; the daemon accepts at most `max_timeout_seconds` (300).
const VALID_FOR_SECONDS: u64 = 120;

/// The two sequential runs on the paid agent.
pub struct TurnResults {
    pub unpaid: Stats,
    pub paid: Stats,
}

/// [`PAID_TURNS`] unpaid JSON turns by the admin on one session of the paid agent, then as
/// many paid turns on one paid visitor session, each with a new payment signed just before
/// it is sent. Each run starts with one untimed turn that opens its session.
pub async fn turns(
    daemon: &Daemon,
    admin: &str,
    facilitator: &Facilitator,
) -> anyhow::Result<TurnResults> {
    let mut conn = Conn::connect(daemon.addr).await?;
    let chat = format!("/api/agents/{PAID_AGENT}/chat");
    let opening = json!({"message": "open the unpaid session", "new_session": true});
    let answer = conn
        .json(&Call::post(&chat, Some(admin), &opening), StatusCode::OK)
        .await?;
    let session_id = field(&answer, "session_id")?;
    let body = json!({"message": "hello bench", "session_id": session_id});
    let unpaid_call = Call::post(&chat, Some(admin), &body);
    crate::progress_at(daemon, "unpaid chat turns on the paid agent, sequential");
    let unpaid = load::sequence(daemon.addr, PAID_TURNS, TURNS_LIMIT, || {
        Ok(unpaid_call.clone())
    })
    .await?;

    let info = conn
        .json(
            &Call::get(&format!("/api/paid/{PAID_AGENT}/info"), None),
            StatusCode::OK,
        )
        .await?;
    let requirement = info["accepts"][0].clone();
    let payer = Payer::new(&requirement)?;
    let paid_chat = format!("/api/paid/{PAID_AGENT}/chat");
    let opening = json!({"message": "open the paid session"});
    let opening =
        Call::post(&paid_chat, None, &opening).with_header("payment-signature", payer.header()?);
    let answer = conn.json(&opening, StatusCode::OK).await?;
    let session_id = field(&answer, "session_id")?;
    let body = json!({"message": "hello bench", "session_id": session_id});
    let paid_call = Call::post(&paid_chat, None, &body);
    let settled_before = facilitator.settles();
    crate::progress_at(daemon, "paid chat turns, sequential, instant facilitator");
    let paid = load::sequence(daemon.addr, PAID_TURNS, TURNS_LIMIT, || {
        Ok(paid_call
            .clone()
            .with_header("payment-signature", payer.header()?))
    })
    .await?;
    let settled = facilitator.settles() - settled_before;
    anyhow::ensure!(
        settled == paid.ok,
        "{} paid turns were served but {settled} settled",
        paid.ok
    );
    Ok(TurnResults { unpaid, paid })
}

/// Signs EIP-3009 authorizations for one x402 v2 requirement with [`PAYER_KEY`].
struct Payer {
    key: SigningKey,
    requirement: Value,
    from: Address,
    to: Address,
    value: [u8; 32],
    asset: Address,
    name: String,
    chain_id: u64,
}

impl Payer {
    fn new(requirement: &Value) -> anyhow::Result<Payer> {
        let text = |key: &str| {
            requirement[key]
                .as_str()
                .with_context(|| format!("no {key} in the offer {requirement}"))
        };
        let address =
            |key: &str| Address::parse(text(key)?).with_context(|| format!("{key} is no address"));
        let chain_id = text("network")?
            .strip_prefix("eip155:")
            .and_then(|id| id.parse().ok())
            .context("the offer's network is not eip155")?;
        Ok(Payer {
            key: SigningKey::from_slice(&PAYER_KEY)?,
            requirement: requirement.clone(),
            from: Address::parse(PAYER).context("the payer")?,
            to: address("payTo")?,
            value: parse_uint256(text("amount")?).context("the amount")?,
            asset: address("asset")?,
            name: requirement["extra"]["name"]
                .as_str()
                .context("no extra.name in the offer")?
                .to_string(),
            chain_id,
        })
    }

    /// A `PAYMENT-SIGNATURE` header: a new random nonce, valid from 10 s ago for
    /// [`VALID_FOR_SECONDS`].
    fn header(&self) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let mut nonce = [0u8; 32];
        outpost::ids::random_bytes(&mut nonce);
        let (valid_after, valid_before) = (now - 10, now + VALID_FOR_SECONDS);
        let authorization = Authorization {
            from: self.from,
            to: self.to,
            value: self.value,
            valid_after: u64_word(valid_after),
            valid_before: u64_word(valid_before),
            nonce,
        };
        let domain = Domain {
            name: &self.name,
            version: "2",
            chain_id: self.chain_id,
            verifying_contract: self.asset,
        };
        let (signature, recovery) = self
            .key
            .sign_prehash_recoverable(&authorization.digest(&domain));
        let mut signature = signature.to_bytes().to_vec();
        signature.push(27 + u8::from(recovery.is_y_odd()));
        let payment = json!({
            "x402Version": 2,
            "accepted": self.requirement,
            "payload": {
                "signature": format!("0x{}", hex(&signature)),
                "authorization": {
                    "from": self.from.checksummed(),
                    "to": self.to.checksummed(),
                    "value": self.requirement["amount"],
                    "validAfter": valid_after.to_string(),
                    "validBefore": valid_before.to_string(),
                    "nonce": format!("0x{}", hex(&nonce)),
                },
            },
        });
        Ok(outpost::paid::header::encode(&payment))
    }
}
