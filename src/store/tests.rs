//! Store round trips on a real redb file.

use super::*;
use crate::clock::Timestamp;
use crate::records::{Message, Session, SessionStatus};

fn session(agent: &str, user: &str) -> Session {
    Session {
        id: crate::ids::SessionId::new(),
        agent_name: agent.into(),
        username: user.into(),
        status: SessionStatus::Active,
        started_at: Timestamp::now(),
        last_message_at: None,
        message_count: 0,
        total_cost_usd: 0.0,
        context_tokens: 0,
        title: None,
    }
}

fn message(role: &str, content: &str, at: i64) -> Message {
    Message {
        id: crate::ids::new_id(),
        session_id: Default::default(),
        role: role.into(),
        content: content.into(),
        created_at: Timestamp(at),
        source: "text".into(),
        execution_id: None,
        cost_usd: Some(0.5),
        usage: None,
        tool_calls: vec![],
        duration_ms: None,
        status: None,
        seq: 0,
    }
}

#[tokio::test]
async fn messages_page_and_history_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut s = session("echo", "ann");
    let sid = s.id.clone();
    store
        .write(move |tx| {
            for i in 0..5 {
                tx.append_message(&mut s, message("user", &format!("m{i}"), 1000 + i))?;
            }
            Ok(())
        })
        .await
        .unwrap();
    // A second open of the same file while this one holds it is refused clearly.
    assert!(matches!(Store::open(dir.path()), Err(Error::Locked(_))));
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    let (sid2, page) = (sid.clone(), None);
    let newest = store
        .read(move |r| r.messages(&sid2, page, 2))
        .await
        .unwrap();
    assert_eq!(
        newest
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["m3", "m4"]
    );
    let before = newest[0].seq;
    let older = store
        .read(move |r| r.messages(&sid, Some(before), 10))
        .await
        .unwrap();
    assert_eq!(older.len(), 3);
    let (history, next) = store
        .read(|r| r.history("echo", &HistoryScope::User("ann".into()), None, 3))
        .await
        .unwrap();
    assert_eq!(history[0].content, "m4");
    let next = next.unwrap();
    let (rest, end) = store
        .read(move |r| r.history("echo", &HistoryScope::User("ann".into()), Some(&next), 3))
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["m1", "m0"]
    );
    assert!(end.is_none());
    let session = store
        .read(|r| r.sessions_of("echo", Some("ann")))
        .await
        .unwrap();
    assert_eq!(session[0].message_count, 5);
    assert_eq!(session[0].title.as_deref(), Some("m0"));
    assert_eq!(
        store.read(|r| r.schema_version()).await.unwrap(),
        tables::SCHEMA_VERSION
    );
}
