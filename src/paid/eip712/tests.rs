//! The test vector of the x402 contract (throwaway keys): both domain separators, the struct
//! hash, the digest, recovery, the refused high-s twin and a digest of the wrong domain.

use super::*;
use crate::evm::{hex, hex_bytes, parse_bytes32, parse_uint256};
use k256::ecdsa::SigningKey;

const PAYER: &str = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A";
const PAYEE: &str = "0x1563915e194D8CfBA1943570603F7606A3115508";
const NONCE: &str = "0xc78bf66f6c3766ec7563452ef340be1013825f8c7b81ebd7666f7464a2848f13";
const SIGNATURE: &str = "0x6c45a2c1622c91513fe1e536c0442c1595c5c33264f86fb3533cb237b84dd6446e61f2f2a59c106d39a2957f80fd51132af9b28356885ab6bae726e8501169261c";
const HIGH_S_TWIN: &str = "0x6c45a2c1622c91513fe1e536c0442c1595c5c33264f86fb3533cb237b84dd644919e0d0d5a63ef92c65d6a807f02aeeb8fb52a6358c0458504eb37a48024d81b1b";

fn sepolia() -> Domain<'static> {
    Domain {
        name: "USDC",
        version: "2",
        chain_id: 84532,
        verifying_contract: Address::parse("0x036CbD53842c5426634e7929541eC2318f3dCF7e").unwrap(),
    }
}

fn mainnet() -> Domain<'static> {
    Domain {
        name: "USD Coin",
        version: "2",
        chain_id: 8453,
        verifying_contract: Address::parse("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913").unwrap(),
    }
}

fn authorization() -> Authorization {
    Authorization {
        from: Address::parse(PAYER).unwrap(),
        to: Address::parse(PAYEE).unwrap(),
        value: parse_uint256("10000").unwrap(),
        valid_after: parse_uint256("0").unwrap(),
        valid_before: parse_uint256("1900000000").unwrap(),
        nonce: parse_bytes32(NONCE).unwrap(),
    }
}

fn check_hex(word: Word, expected: &str) {
    assert_eq!(format!("0x{}", hex(&word)), expected);
}

#[test]
fn type_hashes() {
    check_hex(
        keccak(&[DOMAIN_TYPE.as_bytes()]),
        &format!("0x{DOMAIN_TYPE_HASH}"),
    );
    check_hex(
        keccak(&[TRANSFER_TYPE.as_bytes()]),
        &format!("0x{TRANSFER_TYPE_HASH}"),
    );
}

#[test]
fn domain_separators_of_both_networks() {
    check_hex(
        sepolia().separator(),
        "0x71f17a3b2ff373b803d70a5a07c046c1a2bc8e89c09ef722fcb047abe94c9818",
    );
    check_hex(
        mainnet().separator(),
        "0x02fa7265e7c5d81118673727957699e4d68f74cd74b7db77da710fe8a2c7834f",
    );
}

#[test]
fn struct_hash_and_digests() {
    let auth = authorization();
    check_hex(
        auth.struct_hash(),
        "0x713e7c66ca23b70aba1f3a5c73a6ea237e19a04a603f6f2f11f82d504f55f142",
    );
    check_hex(
        auth.digest(&sepolia()),
        "0x613ddd3dbc6d568a0c2fe58bfb19c8c807522492203008fba10bdcc47b3be91b",
    );
    check_hex(
        auth.digest(&mainnet()),
        "0xc0f050d8451593bf668e1486b79b5798c01869b9d236d8e60ff2d74cbb5525ad",
    );
}

#[test]
fn the_signature_recovers_the_payer() {
    let digest = authorization().digest(&sepolia());
    let signature = hex_bytes(SIGNATURE).unwrap();
    assert_eq!(
        recover(&digest, &signature),
        Ok(Address::parse(PAYER).unwrap())
    );
}

#[test]
fn the_keys_give_the_vector_addresses() {
    let payer = SigningKey::from_slice(&[0x11; 32]).unwrap();
    let payee = SigningKey::from_slice(&[0x22; 32]).unwrap();
    assert_eq!(address_of(payer.verifying_key()).checksummed(), PAYER);
    assert_eq!(address_of(payee.verifying_key()).checksummed(), PAYEE);
}

#[test]
fn k256_signs_the_vector_signature() {
    let key = SigningKey::from_slice(&[0x11; 32]).unwrap();
    let (signature, recovery) = key.sign_prehash_recoverable(&authorization().digest(&sepolia()));
    let mut bytes = signature.to_bytes().to_vec();
    bytes.push(27 + u8::from(recovery.is_y_odd()));
    assert_eq!(format!("0x{}", hex(&bytes)), SIGNATURE);
}

#[test]
fn the_high_s_twin_is_refused() {
    let digest = authorization().digest(&sepolia());
    let twin = hex_bytes(HIGH_S_TWIN).unwrap();
    assert_eq!(recover(&digest, &twin), Err(SignatureError::HighS));
    // It is a valid signature all the same: the curve library alone would accept it.
    let parsed = Signature::from_slice(&twin[..64]).unwrap();
    let key = VerifyingKey::recover_from_prehash(&digest, &parsed, RecoveryId::new(false, false));
    assert_eq!(address_of(&key.unwrap()), Address::parse(PAYER).unwrap());
}

#[test]
fn the_mainnet_digest_does_not_recover_the_payer() {
    let digest = authorization().digest(&mainnet());
    let signature = hex_bytes(SIGNATURE).unwrap();
    let recovered = recover(&digest, &signature);
    assert_ne!(recovered, Ok(Address::parse(PAYER).unwrap()));
}

#[test]
fn malformed_signatures_are_refused() {
    let digest = authorization().digest(&sepolia());
    let good = hex_bytes(SIGNATURE).unwrap();
    assert_eq!(recover(&digest, &good[..64]), Err(SignatureError::Length));
    let mut long = good.clone();
    long.push(0);
    assert_eq!(recover(&digest, &long), Err(SignatureError::Length));
    for v in [0u8, 1, 29, 255] {
        let mut bad = good.clone();
        bad[64] = v;
        assert_eq!(recover(&digest, &bad), Err(SignatureError::V), "v = {v}");
    }
    let mut zero_r = good.clone();
    zero_r[..32].fill(0);
    assert_eq!(recover(&digest, &zero_r), Err(SignatureError::R));
    let mut big_r = good.clone();
    big_r[..32].fill(0xff);
    assert_eq!(recover(&digest, &big_r), Err(SignatureError::R));
    let mut zero_s = good.clone();
    zero_s[32..64].fill(0);
    assert_eq!(recover(&digest, &zero_s), Err(SignatureError::HighS));
}
