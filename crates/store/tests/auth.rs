//! Principals, tokens, approvals and the audit log in the store (both backends).

use store::auth::{Approval, Role};
use store::testing::RawDb as _;

type Res = Result<(), Box<dyn std::error::Error>>;

async fn fresh() -> Result<(tempfile::TempDir, store::Store), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = store::testing::fresh_store(dir.path()).await?;
    Ok((dir, store))
}

/// Guards `principal_for_token` (lookup by hash, revoked excluded) and `create_token`'s
/// checks: only the hash is stored, names are not reused, agents are bound to a team.
#[tokio::test]
async fn tokens_resolve_to_their_principal_until_revoked() -> Res {
    let (_dir, s) = fresh().await?;
    let t = s.create_token("alice", Role::Operator, None, 1).await?;
    let p = s.principal_for_token(&t).await?.ok_or("no principal")?;
    assert_eq!(
        (p.name.as_str(), p.role, p.team),
        ("alice", Role::Operator, None)
    );
    assert_eq!(s.principal_for_token("cdt_nope").await?, None);
    assert_eq!(s.principal_for_token(&t[..t.len() - 1]).await?, None);

    // The token itself is nowhere in the table.
    let rows = s
        .db()
        .query_all_raw(store::stmt(s.db(), "SELECT * FROM api_token", []))
        .await?;
    use sea_orm::ConnectionTrait;
    let hash: String = rows[0].try_get("", "token_hash")?;
    assert_eq!(hash, store::auth::hash_token(&t));
    assert_ne!(hash, t);

    assert!(s.create_token("alice", Role::Admin, None, 2).await.is_err());
    assert!(s.create_token("bob", Role::Agent, None, 2).await.is_err());
    assert!(
        s.create_token("bob", Role::Operator, Some("x"), 2)
            .await
            .is_err()
    );
    assert!(
        s.create_token("bad name", Role::Operator, None, 2)
            .await
            .is_err()
    );
    let a = s
        .create_token("bob", Role::Agent, Some("retention"), 2)
        .await?;
    assert_eq!(
        s.principal_for_token(&a)
            .await?
            .ok_or("agent")?
            .team
            .as_deref(),
        Some("retention")
    );

    assert!(s.revoke_token("alice", 3).await?);
    assert!(!s.revoke_token("alice", 4).await?, "revoked twice");
    assert_eq!(
        s.principal_for_token(&t).await?,
        None,
        "a revoked token works"
    );
    let list = s.tokens().await?;
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].revoked_at, Some(3));
    Ok(())
}

/// Guards `approve_version`'s four-eyes condition and that an approval is audited in the
/// same transaction.
#[tokio::test]
async fn versions_are_approved_once_and_never_by_their_loader() -> Res {
    let (_dir, s) = fresh().await?;
    let v = s.upsert_version("c", "h1", "{}", 10).await?;
    s.set_loaded_by(v, "alice").await?;
    s.set_loaded_by(v, "mallory").await?;
    let a = s.version_approval(v).await?.ok_or("v")?;
    assert_eq!(
        a.loaded_by.as_deref(),
        Some("alice"),
        "the first loader stays"
    );
    assert_eq!(
        s.approve_version(v, "alice", 11).await?,
        Approval::OwnVersion
    );
    assert_eq!(
        s.approve_version(v + 100, "bea", 11).await?,
        Approval::NoSuchVersion
    );
    assert_eq!(s.approve_version(v, "bea", 12).await?, Approval::Approved);
    assert_eq!(
        s.approve_version(v, "carl", 13).await?,
        Approval::AlreadyApproved { by: "bea".into() }
    );
    let a = s.version_approval(v).await?.ok_or("v")?;
    assert_eq!(
        (a.approved_by.as_deref(), a.approved_at),
        (Some("bea"), Some(12))
    );
    let audit = s.audit_since(0).await?;
    assert_eq!(audit.len(), 1, "only the approval that happened: {audit:?}");
    assert_eq!(
        (audit[0].principal.as_str(), audit[0].action.as_str()),
        ("bea", "approve")
    );
    assert_eq!(s.audit_since(13).await?.len(), 0);
    Ok(())
}

/// The demo's per-database secret: created once, the same on every read.
#[tokio::test]
async fn a_stored_secret_is_created_once() -> Res {
    let (_dir, s) = fresh().await?;
    let a = s.stored_secret("callback").await?;
    let b = s.stored_secret("callback").await?;
    assert_eq!(a, b);
    assert_ne!(a, s.stored_secret("other").await?);
    Ok(())
}
