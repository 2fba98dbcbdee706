//! The EIP-712 digest of an EIP-3009 `TransferWithAuthorization` and the recovery of its
//! signer, with our own checks on the signature (65 bytes, v 27 or 28, 0 < r < n,
//! 0 < s ≤ n/2): the curve library accepts high-s twins, so we refuse them here.

use crate::evm::{Address, Word};
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use sha3::{Digest, Keccak256};

/// keccak256(`EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)`).
pub const DOMAIN_TYPE_HASH: &str =
    "8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f";
/// keccak256 of the `TransferWithAuthorization(…)` type string.
pub const TRANSFER_TYPE_HASH: &str =
    "7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267";
const DOMAIN_TYPE: &str =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
const TRANSFER_TYPE: &str = "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)";

/// n / 2 of secp256k1: the largest `s` we accept.
const HALF_ORDER: Word = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// Ethereum's Keccak-256 over the concatenation of `parts`.
pub fn keccak(parts: &[&[u8]]) -> Word {
    let mut hasher = Keccak256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The token contract's signing domain: from configuration, never from the client.
#[derive(Clone, Debug)]
pub struct Domain<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub chain_id: u64,
    pub verifying_contract: Address,
}

impl Domain<'_> {
    pub fn separator(&self) -> Word {
        keccak(&[
            &keccak(&[DOMAIN_TYPE.as_bytes()]),
            &keccak(&[self.name.as_bytes()]),
            &keccak(&[self.version.as_bytes()]),
            &crate::evm::u64_word(self.chain_id),
            &self.verifying_contract.word(),
        ])
    }
}

/// The signed fields of an EIP-3009 transfer authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub from: Address,
    pub to: Address,
    pub value: Word,
    pub valid_after: Word,
    pub valid_before: Word,
    pub nonce: Word,
}

impl Authorization {
    pub fn struct_hash(&self) -> Word {
        keccak(&[
            &keccak(&[TRANSFER_TYPE.as_bytes()]),
            &self.from.word(),
            &self.to.word(),
            &self.value,
            &self.valid_after,
            &self.valid_before,
            &self.nonce,
        ])
    }

    /// The digest the payer signed: keccak(0x1901 ‖ domainSeparator ‖ structHash).
    pub fn digest(&self, domain: &Domain<'_>) -> Word {
        keccak(&[&[0x19, 0x01], &domain.separator(), &self.struct_hash()])
    }
}

/// Why a signature is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    Length,
    V,
    R,
    HighS,
    Unrecoverable,
}

/// The address that signed `digest`, after our own checks on `signature` (r ‖ s ‖ v).
pub fn recover(digest: &Word, signature: &[u8]) -> Result<Address, SignatureError> {
    let signature: &[u8; 65] = signature.try_into().map_err(|_| SignatureError::Length)?;
    let v = signature[64];
    if v != 27 && v != 28 {
        return Err(SignatureError::V);
    }
    let r: Word = signature[..32].try_into().expect("32 bytes");
    let s: Word = signature[32..64].try_into().expect("32 bytes");
    if s == [0; 32] || s > HALF_ORDER {
        return Err(SignatureError::HighS);
    }
    // from_scalars refuses r = 0 and r ≥ n (and s = 0).
    let parsed = Signature::from_scalars(r, s).map_err(|_| SignatureError::R)?;
    let recovery = RecoveryId::new(v == 28, false);
    let key = VerifyingKey::recover_from_prehash(digest, &parsed, recovery)
        .map_err(|_| SignatureError::Unrecoverable)?;
    Ok(address_of(&key))
}

/// The address of a public key: the last 20 bytes of keccak(uncompressed point less 0x04).
pub fn address_of(key: &VerifyingKey) -> Address {
    let point = key.to_sec1_point(false);
    let hash = keccak(&[&point.as_bytes()[1..]]);
    Address(hash[12..].try_into().expect("20 bytes"))
}

#[cfg(test)]
mod tests;
