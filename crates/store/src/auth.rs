//! Principals and their API tokens, the callback signing secret, and workflow approvals.
//!
//! A token is shown once, when it is created; only its SHA-256 is stored, so a copy of the
//! database (a backup, a replica) hands out no working token. A token of 256 random bits
//! needs no salt or slow hash: nobody can guess it, and its hash is looked up by index.
//!
//! Delivery-report URLs carry `HMAC-SHA256(secret, key)` (see [`callback_token`]); the
//! callback handler recomputes it and compares in constant time before it reads anything.

use sea_orm::{FromQueryResult, TransactionTrait};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Millis, Result, Store, StoreError, exec, query};

/// What a principal may do. The route table of the API names one or more per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything, tokens and approvals included.
    Admin,
    /// Authors workflows, imports subscribers, triggers runs, sends business events.
    Operator,
    /// Approves workflow versions loaded by someone else.
    Approver,
    /// Reads reports; phone numbers are masked in what it reads.
    Analyst,
    /// Reads and completes its own team's tasks (the token is bound to a team).
    Agent,
    /// Kannel: the MO callback only.
    Gateway,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Operator,
        Role::Approver,
        Role::Analyst,
        Role::Agent,
        Role::Gateway,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Analyst => "analyst",
            Role::Agent => "agent",
            Role::Gateway => "gateway",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a request or a CLI command acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// Agents only: the team whose tasks the principal sees.
    pub team: Option<String>,
}

/// A token as `campaignd token list` shows it (never the token itself).
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct TokenRow {
    pub name: String,
    pub role: String,
    pub team: Option<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// At least 16 bytes; shorter secrets are refused (they could be brute-forced offline
    /// from one signed URL).
    pub fn new(bytes: impl Into<Vec<u8>>) -> std::result::Result<Secret, String> {
        let bytes = bytes.into();
        if bytes.len() < 16 {
            return Err(format!(
                "the secret has {} bytes; at least 16 are required (e.g. `openssl rand -hex 32`)",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }

    /// 256 fresh random bits, hex-encoded.
    pub fn generate() -> Secret {
        Secret(random_hex(32).into_bytes())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `n` random bytes from the OS generator (through UUID v4, which draws from it), as hex.
pub fn random_hex(n: usize) -> String {
    let mut out = String::with_capacity(n * 2);
    while out.len() < n * 2 {
        // 122 of a v4 UUID's 128 bits are random; take the 15 whole random bytes.
        let u = uuid::Uuid::new_v4();
        let b = u.as_bytes();
        for (i, byte) in b.iter().enumerate() {
            if i == 6 || i == 8 || out.len() >= n * 2 {
                continue;
            }
            out.push_str(&format!("{byte:02x}"));
        }
    }
    out
}

/// A new API token: `cdt_` and 256 random bits.
pub fn new_token() -> String {
    format!("cdt_{}", random_hex(32))
}

/// What is stored for a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The token a delivery-report URL carries for `key`: the first 128 bits of
/// HMAC-SHA256(secret, key), hex. 128 bits cannot be guessed, and keep the URL short.
pub fn callback_token(secret: &Secret, key: &str) -> String {
    hex::encode(&hmac_sha256(secret.expose(), key.as_bytes())[..16])
}

/// Whether `token` is [`callback_token`] of `key`, compared in constant time so the answer's
/// timing says nothing about how much of a guess was right.
pub fn verify_callback_token(secret: &Secret, key: &str, token: &str) -> bool {
    let want = callback_token(secret, key);
    want.len() == token.len() && bool::from(want.as_bytes().ct_eq(token.as_bytes()))
}

/// Names of principals and teams: what `token create --name` accepts.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b))
}

/// How an approval went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    Approved,
    AlreadyApproved {
        by: String,
    },
    /// Four eyes: the approver loaded (authored) this version.
    OwnVersion,
    NoSuchVersion,
}

/// A version's provenance, for the approval gate and `campaignd versions`.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct VersionApproval {
    pub id: i64,
    pub campaign: String,
    pub hash: String,
    pub loaded_at: i64,
    pub loaded_by: Option<String>,
    pub approved_by: Option<String>,
    pub approved_at: Option<i64>,
}

impl Store {
    /// Creates a principal and returns its token, the only time it is visible.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        team: Option<&str>,
        now: Millis,
    ) -> Result<String> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(format!(
                "principal name `{name}`: expected 1 to 64 of A-Z, a-z, 0-9, _ - . @"
            )));
        }
        match (role, team) {
            (Role::Agent, Some(t)) if valid_name(t) => {}
            (Role::Agent, _) => {
                return Err(StoreError::Invalid(
                    "an agent token is bound to a team: give --team (1 to 64 of A-Z, a-z, 0-9, _ - . @)"
                        .into(),
                ));
            }
            (_, Some(_)) => {
                return Err(StoreError::Invalid(
                    "only agent tokens are bound to a team".into(),
                ));
            }
            (_, None) => {}
        }
        let taken = query(
            self.db(),
            "SELECT id FROM api_token WHERE name = ?",
            [name.into()],
        )
        .await?;
        if !taken.is_empty() {
            return Err(StoreError::Invalid(format!(
                "a principal named `{name}` exists (revoked names are not reused, so the audit log stays unambiguous)"
            )));
        }
        let token = new_token();
        exec(
            self.db(),
            "INSERT INTO api_token (name, role, team, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
            [
                name.into(),
                role.as_str().into(),
                team.map(str::to_owned).into(),
                hash_token(&token).into(),
                now.into(),
            ],
        )
        .await?;
        Ok(token)
    }

    /// Revokes a principal's token; false when there is no such active principal.
    pub async fn revoke_token(&self, name: &str, now: Millis) -> Result<bool> {
        let r = exec(
            self.db(),
            "UPDATE api_token SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            [now.into(), name.into()],
        )
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows = query(
            self.db(),
            "SELECT name, role, team, created_at, revoked_at FROM api_token ORDER BY name",
            [],
        )
        .await?;
        rows.iter()
            .map(|r| Ok(TokenRow::from_query_result(r, "")?))
            .collect()
    }

    /// The active principal a token belongs to; `None` for unknown and revoked tokens.
    pub async fn principal_for_token(&self, token: &str) -> Result<Option<Principal>> {
        let rows = query(
            self.db(),
            "SELECT name, role, team FROM api_token WHERE token_hash = ? AND revoked_at IS NULL",
            [hash_token(token).into()],
        )
        .await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let role: String = r.try_get("", "role")?;
        Ok(Role::parse(&role).map(|role| Principal {
            name: r.try_get("", "name").unwrap_or_default(),
            role,
            team: r.try_get("", "team").unwrap_or(None),
        }))
    }

    /// The secret stored under `name`, created on first use. For the embedded demo only:
    /// a production daemon reads its secrets from the environment.
    pub async fn stored_secret(&self, name: &str) -> Result<Secret> {
        exec(
            self.db(),
            "INSERT INTO app_secret (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            [name.into(), random_hex(32).into()],
        )
        .await?;
        let rows = query(
            self.db(),
            "SELECT value FROM app_secret WHERE name = ?",
            [name.into()],
        )
        .await?;
        let v: String = rows
            .first()
            .ok_or_else(|| StoreError::Invalid(format!("secret {name} vanished")))?
            .try_get("", "value")?;
        Secret::new(v.into_bytes()).map_err(StoreError::Invalid)
    }

    /// Records who loaded a version, once: the first loader is its author.
    pub async fn set_loaded_by(&self, version_id: i64, who: &str) -> Result<()> {
        exec(
            self.db(),
            "UPDATE workflow_version SET loaded_by = ? WHERE id = ? AND loaded_by IS NULL",
            [who.into(), version_id.into()],
        )
        .await?;
        Ok(())
    }

    /// Approves a version as `approver`, who must not be the principal that loaded it.
    /// The check is in the statement itself, so no race between check and write.
    pub async fn approve_version(
        &self,
        version_id: i64,
        approver: &str,
        now: Millis,
    ) -> Result<Approval> {
        let tx = self.db().begin().await?;
        let r = exec(
            &tx,
            "UPDATE workflow_version SET approved_by = ?, approved_at = ? \
             WHERE id = ? AND approved_by IS NULL AND (loaded_by IS NULL OR loaded_by <> ?)",
            [
                approver.into(),
                now.into(),
                version_id.into(),
                approver.into(),
            ],
        )
        .await?;
        if r.rows_affected() == 1 {
            // The approval and its audit entry commit together.
            crate::audit::record(
                &tx,
                now,
                approver,
                crate::audit::action::APPROVE,
                &format!("version {version_id}"),
                None,
            )
            .await?;
            tx.commit().await?;
            return Ok(Approval::Approved);
        }
        tx.rollback().await?;
        Ok(match self.version_approval(version_id).await? {
            None => Approval::NoSuchVersion,
            Some(v) => match v.approved_by {
                Some(by) => Approval::AlreadyApproved { by },
                None => Approval::OwnVersion,
            },
        })
    }

    pub async fn version_approval(&self, version_id: i64) -> Result<Option<VersionApproval>> {
        let rows = query(
            self.db(),
            "SELECT id, campaign, hash, loaded_at, loaded_by, approved_by, approved_at FROM workflow_version WHERE id = ?",
            [version_id.into()],
        )
        .await?;
        rows.first()
            .map(|r| Ok(VersionApproval::from_query_result(r, "")?))
            .transpose()
    }

    /// Every version of a campaign with who loaded and who approved it, oldest first.
    pub async fn version_approvals(&self, campaign: &str) -> Result<Vec<VersionApproval>> {
        let rows = query(
            self.db(),
            "SELECT id, campaign, hash, loaded_at, loaded_by, approved_by, approved_at FROM workflow_version WHERE campaign = ? ORDER BY id",
            [campaign.into()],
        )
        .await?;
        rows.iter()
            .map(|r| Ok(VersionApproval::from_query_result(r, "")?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn callback_tokens_verify_only_for_their_key_and_secret() {
        let s = Secret::new(b"0123456789abcdef0123".to_vec()).unwrap();
        let other = Secret::new(b"fedcba98765432100123".to_vec()).unwrap();
        let t = callback_token(&s, "r1-w-s2-abc");
        assert!(verify_callback_token(&s, "r1-w-s2-abc", &t));
        assert!(!verify_callback_token(&s, "r1-w-s3-abc", &t));
        assert!(!verify_callback_token(&other, "r1-w-s2-abc", &t));
        assert!(!verify_callback_token(&s, "r1-w-s2-abc", &t[..31]));
        assert!(!verify_callback_token(&s, "r1-w-s2-abc", ""));
    }

    #[test]
    fn secrets_do_not_show_in_debug_and_short_ones_are_refused() {
        let s = Secret::new(b"0123456789abcdef".to_vec()).unwrap();
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(Secret::new(b"short".to_vec()).is_err());
    }

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let a = new_token();
        assert_eq!(a.len(), 4 + 64);
        assert_ne!(a, new_token());
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), a);
    }
}
