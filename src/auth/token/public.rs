//! Public keys that verify tokens, their algorithms and their `kid`.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::DecodingKey;
use sha2::{Digest, Sha256};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The signature algorithms tokens may use. Each key has exactly one: a
/// token's `alg` header must name the algorithm of the key that checks it,
/// so `none`, HMAC and any algorithm not listed here are never accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256: small, fast, and what registry:2 expects.
    #[default]
    ES256,
    /// RSA PKCS#1 v1.5 with SHA-256 (bring your own key; ring cannot
    /// generate RSA keys).
    RS256,
    /// Ed25519. registry:2 (distribution 2.8, libtrust) cannot verify it
    /// and refuses an Ed25519 certificate in its `rootcertbundle`: use it
    /// only when portcullis alone checks the tokens.
    EdDSA,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::RS256 => &rcgen::PKCS_RSA_SHA256,
            Algorithm::EdDSA => &rcgen::PKCS_ED25519,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown token algorithm {0:?} (expected ES256, RS256 or EdDSA)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// The JOSE names, exactly (`alg` header values are case-sensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ES256" => Ok(Algorithm::ES256),
            "RS256" => Ok(Algorithm::RS256),
            "EdDSA" => Ok(Algorithm::EdDSA),
            _ => Err(UnknownAlgorithm(s.to_owned())),
        }
    }
}

/// Why a public key cannot verify tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    #[error("not a DER SubjectPublicKeyInfo")]
    Malformed,
    #[error("unsupported key type (need ECDSA P-256, RSA or Ed25519)")]
    Unsupported,
}

/// A key that verifies token signatures.
#[derive(Clone)]
pub struct VerificationKey {
    alg: Algorithm,
    kid: String,
    spki_der: Vec<u8>,
    decoding: DecodingKey,
    /// Where the key came from (a path), for logs.
    source: String,
}

impl VerificationKey {
    /// Builds a key from a DER SubjectPublicKeyInfo (a `PUBLIC KEY` PEM
    /// block, or the key of a certificate).
    pub fn from_spki_der(der: &[u8], source: impl Into<String>) -> Result<Self, PublicKeyError> {
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(der).map_err(|_| PublicKeyError::Malformed)?;
        if !rest.is_empty() {
            return Err(PublicKeyError::Malformed);
        }
        let oid = &spki.algorithm.algorithm;
        let key = spki.subject_public_key.data.as_ref();
        let (alg, decoding) = if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            // an uncompressed P-256 point: 0x04 || X || Y
            if curve != Some(OID_EC_P256) || key.len() != 65 || key[0] != 4 {
                return Err(PublicKeyError::Unsupported);
            }
            (Algorithm::ES256, DecodingKey::from_ec_der(key))
        } else if *oid == OID_PKCS1_RSAENCRYPTION {
            (Algorithm::RS256, DecodingKey::from_rsa_der(key))
        } else if *oid == OID_SIG_ED25519 {
            if key.len() != 32 {
                return Err(PublicKeyError::Malformed);
            }
            (Algorithm::EdDSA, DecodingKey::from_ed_der(key))
        } else {
            return Err(PublicKeyError::Unsupported);
        };
        Ok(VerificationKey {
            alg,
            kid: libtrust_kid(der),
            spki_der: der.to_vec(),
            decoding,
            source: source.into(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The libtrust key id, as registry:2 computes it for the certificates
    /// of its `rootcertbundle`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("source", &self.source)
            .finish()
    }
}

/// The key id distribution 2.8 looks a token's `kid` up by: libtrust's
/// `keyIDFromCryptoKey` (docker/libtrust util.go): SHA-256 of the DER
/// SubjectPublicKeyInfo, truncated to 240 bits, base32 without padding,
/// in 12 groups of 4 separated by `:`.
pub fn libtrust_kid(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let b32 = base32(&digest[..30]);
    let groups: Vec<&str> = b32
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    groups.join(":")
}

/// RFC 4648 base32 (upper case), without padding.
fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buf >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// The DER prefix Go's `x509.MarshalPKIXPublicKey` writes before an
    /// uncompressed P-256 point.
    const P256_SPKI_PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn base32_matches_rfc4648() {
        for (input, want) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()), want, "{input}");
        }
    }

    /// The example key of distribution's docs/spec/auth/jwt.md (v2.8.2):
    /// its JWK `x`/`y` and the `kid` the spec shows for it.
    #[test]
    fn kid_matches_the_distribution_spec_example() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let x = b64
            .decode("m7zUpx3b-zmVE5cymSs64POG9QcyEpJaYCD82-549_Q")
            .unwrap();
        let y = b64
            .decode("dU3biz8sZ_8GPB-odm8Wxz3lNDr1xcAQQPQaOcr1fmc")
            .unwrap();
        let mut der = hex(P256_SPKI_PREFIX);
        der.push(4);
        der.extend_from_slice(&x);
        der.extend_from_slice(&y);
        let key = VerificationKey::from_spki_der(&der, "spec").unwrap();
        assert_eq!(key.algorithm(), Algorithm::ES256);
        assert_eq!(
            key.kid(),
            "PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6"
        );
    }

    #[test]
    fn kid_shape() {
        let kid = libtrust_kid(b"anything");
        assert_eq!(kid.len(), 12 * 4 + 11);
        assert!(kid.split(':').all(|g| g.len() == 4));
    }

    #[test]
    fn refuses_unsupported_keys() {
        assert_eq!(
            VerificationKey::from_spki_der(b"junk", "x").unwrap_err(),
            PublicKeyError::Malformed
        );
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert_eq!(
            VerificationKey::from_spki_der(&p384.public_key_der(), "x").unwrap_err(),
            PublicKeyError::Unsupported
        );
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let k = VerificationKey::from_spki_der(&ed.public_key_der(), "x").unwrap();
        assert_eq!(k.algorithm(), Algorithm::EdDSA);
    }

    #[test]
    fn algorithm_names() {
        for a in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
        }
        assert!("none".parse::<Algorithm>().is_err());
        assert!("HS256".parse::<Algorithm>().is_err());
        assert!("es256".parse::<Algorithm>().is_err());
    }
}
