//! The read cache never answers one caller with another's view: every cached route, as each
//! caller of the matrix that may read it, after each other caller, in both orders. Each
//! answer is compared with the one the same caller got from a cold cache.

use super::callers::{Who, World, AGENT};
use hyper::Method;
use serde_json::json;

/// The cached routes with the queries whose answers depend on who asks.
fn cached_paths() -> Vec<String> {
    let sessions = format!("/api/agents/{AGENT}/chat/sessions");
    let history = format!("/api/agents/{AGENT}/chat/history/persistent");
    let mut paths = vec![
        sessions.clone(),
        format!("{sessions}?status=active"),
        format!("{sessions}?status=closed"),
        history.clone(),
        format!("{history}?all=true"),
    ];
    for user in ["olive", "sam", "admin"] {
        paths.push(format!("{history}?user={user}"));
    }
    paths
}

/// The callers with a valid token of a user who may see the agent, and one who may not.
const READERS: [Who; 5] = [
    Who::Admin,
    Who::Owner,
    Who::Shared,
    Who::DeviceChat,
    Who::Other,
];

/// One answer as the caller sees it: status and body.
async fn read(world: &World, who: Who, path: &str) -> (u16, String) {
    let reply = world
        .server
        .call(Method::GET, path, world.token(who), None)
        .await;
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

/// A commit that changes none of the cached answers, so every cached body goes stale.
async fn new_generation(world: &World, n: &mut u32) {
    *n += 1;
    let reply = world
        .server
        .call(
            Method::PATCH,
            &format!("/api/agents/{AGENT}"),
            world.token(Who::Owner),
            Some(json!({"description": format!("generation {n}")})),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_is_only_ever_served_to_the_view_it_was_made_for() {
    let world = World::build().await;
    let mut n = 0;
    let mut wrong = Vec::new();
    for path in cached_paths() {
        for first in READERS {
            for second in READERS {
                if first == second {
                    continue;
                }
                new_generation(&world, &mut n).await;
                let cold = read(&world, second, &path).await;
                new_generation(&world, &mut n).await;
                read(&world, first, &path).await;
                for _ in 0..2 {
                    let warm = read(&world, second, &path).await;
                    if warm != cold {
                        wrong.push(format!(
                            "{path} as {} after {}: {} {} instead of {} {}",
                            second.label(),
                            first.label(),
                            warm.0,
                            warm.1,
                            cold.0,
                            cold.1
                        ));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
