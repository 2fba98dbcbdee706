//! Who calls in the authorization matrix, and the world they call into: two agents, four
//! users, and each user's sessions, executions and links.

use crate::support::*;
use hyper::Method;
use outpost::config::{AgentConfig, Config, VoiceConfig, VoiceMode};
use serde_json::{json, Value};

/// The agent the matrix is about: made through the API by its owner olive, shared with sam.
pub const AGENT: &str = "atelier";
/// The admin's own agent (from the file, paid), which no one else may see.
pub const VAULT: &str = "vault";
/// A user no caller is: shares are added and removed for them.
pub const NOBODY: &str = "nobody";

/// A column of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    NoToken,
    Expired,
    Revoked,
    /// dora, whose account was removed after she logged in.
    Deleted,
    /// mallory: a user the agent is not shared with.
    Other,
    /// rhea, made again after her first account (shared with, chatting) was removed: she
    /// must find nothing of the first one.
    Recreated,
    /// sam: the agent is shared with him.
    Shared,
    /// olive: she owns the agent.
    Owner,
    Admin,
    /// olive's device tokens with one scope each.
    DeviceChat,
    DeviceTasks,
    DeviceVoice,
}

impl Who {
    pub const ALL: [Who; 12] = [
        Who::NoToken,
        Who::Expired,
        Who::Revoked,
        Who::Deleted,
        Who::Other,
        Who::Recreated,
        Who::Shared,
        Who::Owner,
        Who::Admin,
        Who::DeviceChat,
        Who::DeviceTasks,
        Who::DeviceVoice,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Who::NoToken => "none",
            Who::Expired => "expired",
            Who::Revoked => "revoked",
            Who::Deleted => "deleted",
            Who::Other => "other",
            Who::Recreated => "recreated",
            Who::Shared => "shared",
            Who::Owner => "owner",
            Who::Admin => "admin",
            Who::DeviceChat => "dev:chat",
            Who::DeviceTasks => "dev:tasks",
            Who::DeviceVoice => "dev:voice",
        }
    }

    /// The scope of a device token.
    pub fn scope(self) -> Option<&'static str> {
        match self {
            Who::DeviceChat => Some("chat"),
            Who::DeviceTasks => Some("tasks"),
            Who::DeviceVoice => Some("voice"),
            _ => None,
        }
    }

    /// True for the callers without a valid token.
    pub fn is_anonymous(self) -> bool {
        matches!(
            self,
            Who::NoToken | Who::Expired | Who::Revoked | Who::Deleted
        )
    }

    /// The user behind the token (device tokens are olive's); a re-created account is
    /// answered as any user the agent is not shared with.
    pub fn user(self) -> Who {
        match self {
            _ if self.scope().is_some() => Who::Owner,
            Who::Recreated => Who::Other,
            _ => self,
        }
    }
}

/// Which resources fill a request's path: the caller's own, another user's, or the admin's
/// private agent's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ids {
    Own,
    Foreign,
    Vault,
}

impl Ids {
    pub fn label(self) -> &'static str {
        match self {
            Ids::Own => "own",
            Ids::Foreign => "foreign",
            Ids::Vault => "vault",
        }
    }
}

/// One user's chat turn on an agent.
#[derive(Clone, Debug)]
pub struct Turn {
    pub username: &'static str,
    pub session: String,
    pub execution: String,
}

/// A public link as its creator saw it.
#[derive(Clone, Debug)]
pub struct Link {
    pub id: String,
    pub token: String,
}

/// Everything the matrix needs: the daemon, a token per caller, and the resources.
pub struct World {
    pub server: TestServer,
    pub tokens: Vec<(Who, Option<String>)>,
    pub olive: Turn,
    pub sam: Turn,
    /// The admin's turn on `atelier`.
    pub admin: Turn,
    /// The admin's turn on `vault`.
    pub vault: Turn,
    pub link: Link,
    pub vault_link: Link,
    pub visitor_session: String,
    /// The first rhea's turn on `atelier`, deleted with her account.
    pub rhea_before: Turn,
}

pub fn config(config: &mut Config) {
    config.users_may_create_agents = true;
    let facilitator = "http://127.0.0.1:9"; // never reached: no request here pays
    config.agents = vec![AgentConfig {
        paid: Some(crate::paid::paid_config(facilitator)),
        voice: true,
        ..echo_agent(VAULT, 0, 8)
    }];
    config.voice = Some(VoiceConfig {
        mode: VoiceMode::Echo,
        max_sessions: 1000,
        max_per_user: 1000,
        ..VoiceConfig::default()
    });
    config.public.requests_per_minute_per_ip = 100_000;
}

impl World {
    pub async fn build() -> World {
        let server = TestServer::with(config).await;
        let admin = server.admin().await;
        let olive = server.user("olive").await;
        let sam = server.user("sam").await;
        let mallory = server.user("mallory").await;
        server.user(NOBODY).await;
        let created = server
            .post("/api/agents", &olive, json!({"name": AGENT, "voice": true}))
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let shared = server
            .post(
                &format!("/api/agents/{AGENT}/shares"),
                &olive,
                json!({"username": "sam"}),
            )
            .await;
        assert_eq!(shared.status, 201, "{:?}", shared.body);

        let revoked = server.login("olive", "olive-password").await;
        let logout = server
            .call(Method::POST, "/api/auth/logout", Some(&revoked), None)
            .await;
        assert_eq!(logout.status, 200, "{:?}", logout.body);
        let expired = expired_token(&server, "olive");
        let deleted = server.user("dora").await;
        let removed = server
            .call(Method::DELETE, "/api/users/dora", Some(&admin), None)
            .await;
        assert_eq!(removed.status, 200, "{:?}", removed.body);
        let (rhea_before, rhea) = recreated(&server, &admin, &olive).await;
        let mut tokens = vec![
            (Who::NoToken, None),
            (Who::Expired, Some(expired)),
            (Who::Revoked, Some(revoked)),
            (Who::Deleted, Some(deleted)),
            (Who::Other, Some(mallory)),
            (Who::Recreated, Some(rhea)),
            (Who::Shared, Some(sam.clone())),
            (Who::Owner, Some(olive.clone())),
            (Who::Admin, Some(admin.clone())),
        ];
        for who in [Who::DeviceChat, Who::DeviceTasks, Who::DeviceVoice] {
            let token = device_token(&server, &admin, "olive", who.scope()).await;
            tokens.push((who, Some(token)));
        }

        let olive_turn = turn(&server, &olive, "olive", AGENT).await;
        let sam_turn = turn(&server, &sam, "sam", AGENT).await;
        let admin_turn = turn(&server, &admin, "admin", AGENT).await;
        let vault_turn = turn(&server, &admin, "admin", VAULT).await;
        let link = link_of(&server, &olive, AGENT).await;
        let vault_link = link_of(&server, &admin, VAULT).await;
        let visit = server
            .call(
                Method::POST,
                &format!("/api/public/chat/{}", link.token),
                None,
                Some(json!({"message": "hello"})),
            )
            .await;
        assert_eq!(visit.status, 200, "{:?}", visit.body);
        World {
            server,
            tokens,
            olive: olive_turn,
            sam: sam_turn,
            admin: admin_turn,
            vault: vault_turn,
            link,
            vault_link,
            visitor_session: visit.json()["session_id"].as_str().unwrap().to_string(),
            rhea_before,
        }
    }

    pub fn token(&self, who: Who) -> Option<&str> {
        let (_, token) = self.tokens.iter().find(|(w, _)| *w == who).unwrap();
        token.as_deref()
    }

    /// A token nobody has used yet for `who` (logout revokes the one it is given).
    pub async fn fresh_token(&self, who: Who) -> Option<String> {
        let admin = self.token(Who::Admin).unwrap();
        let username = match who.user() {
            Who::Other if who == Who::Recreated => "rhea",
            Who::Other => "mallory",
            Who::Shared => "sam",
            Who::Owner => "olive",
            Who::Admin => "admin",
            _ => return self.token(who).map(str::to_string),
        };
        Some(device_token(&self.server, admin, username, who.scope()).await)
    }

    /// Whose turn fills the path: the caller's own, someone else's, or the admin's on vault.
    pub fn turn(&self, who: Who, ids: Ids) -> &Turn {
        match (ids, who.user()) {
            (Ids::Vault, _) => &self.vault,
            (Ids::Own, Who::Owner) => &self.olive,
            (Ids::Own, Who::Admin) => &self.admin,
            (Ids::Own, _) => &self.sam,
            (Ids::Foreign, Who::Shared | Who::Other) => &self.olive,
            (Ids::Foreign, _) => &self.sam,
        }
    }

    /// The token of the user who made `turn`.
    pub fn token_of(&self, turn: &Turn) -> &str {
        let who = match turn.username {
            "olive" => Who::Owner,
            "sam" => Who::Shared,
            _ => Who::Admin,
        };
        self.token(who).unwrap()
    }

    /// Strings a caller must never find in a successful answer: ids of what it may not see,
    /// and the names of agents it may not see unless the route is open to all (the public
    /// routes name the agent they serve).
    pub fn secrets(&self, who: Who, open: bool) -> Vec<String> {
        let name = |agent: &str| {
            if open {
                String::new()
            } else {
                format!("\"{agent}\"")
            }
        };
        let turn_ids = |t: &Turn| vec![t.session.clone(), t.execution.clone()];
        let vault = [
            turn_ids(&self.vault),
            vec![self.vault_link.id.clone(), name(VAULT)],
        ]
        .concat();
        match who.user() {
            Who::Admin => Vec::new(),
            Who::Owner => vault,
            Who::Shared => [
                vault,
                turn_ids(&self.olive),
                turn_ids(&self.admin),
                vec![self.link.id.clone()],
            ]
            .concat(),
            _ => [
                vault,
                turn_ids(&self.olive),
                turn_ids(&self.admin),
                turn_ids(&self.sam),
                vec![self.link.id.clone(), name(AGENT)],
                turn_ids(&self.rhea_before),
            ]
            .concat(),
        }
        .into_iter()
        .filter(|secret| !secret.is_empty())
        .collect()
    }
}

/// rhea, with a share of `atelier` and a turn on it, removed and made again: her first
/// turn, and the new account's token.
async fn recreated(server: &TestServer, admin: &str, olive: &str) -> (Turn, String) {
    let first = server.user("rhea").await;
    let shared = server
        .post(
            &format!("/api/agents/{AGENT}/shares"),
            olive,
            json!({"username": "rhea"}),
        )
        .await;
    assert_eq!(shared.status, 201, "{:?}", shared.body);
    let before = turn(server, &first, "rhea", AGENT).await;
    device_token(server, admin, "rhea", Some("chat")).await;
    let removed = server
        .call(Method::DELETE, "/api/users/rhea", Some(admin), None)
        .await;
    assert_eq!(removed.status, 200, "{:?}", removed.body);
    (before, server.user("rhea").await)
}

/// A token of `username` that expired a minute ago, signed with the daemon's own secret.
fn expired_token(server: &TestServer, username: &str) -> String {
    let secret = std::fs::read_to_string(server.data_dir().join(outpost::data_dir::SECRET_FILE))
        .expect("the token secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({
        "sub": username, "role": "user", "iat": now - 3600, "exp": now - 60,
        "jti": format!("expired-{username}"),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.trim().as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A device token minted by the admin through `POST /api/tokens`.
pub async fn device_token(
    server: &TestServer,
    admin: &str,
    username: &str,
    scope: Option<&str>,
) -> String {
    let mut body = json!({"username": username, "ttl": "1h"});
    if let Some(scope) = scope {
        body["scope"] = json!(scope);
    }
    let reply = server.post("/api/tokens", admin, body).await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.json()["access_token"].as_str().unwrap().to_string()
}

async fn turn(
    server: &TestServer,
    token: &str,
    username: &'static str,
    agent: &'static str,
) -> Turn {
    let reply = server
        .chat_json(agent, token, json!({"message": "hello there"}))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = reply.json();
    let text = |v: &Value| v.as_str().unwrap().to_string();
    Turn {
        username,
        session: text(&body["session_id"]),
        execution: text(&body["execution_id"]),
    }
}

/// A new public link of `agent`, made with `token`.
pub async fn link_of(server: &TestServer, token: &str, agent: &str) -> Link {
    let reply = server
        .post(
            &format!("/api/agents/{agent}/public-links"),
            token,
            json!({}),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let body = reply.json();
    Link {
        id: body["id"].as_str().unwrap().to_string(),
        token: body["token"].as_str().unwrap().to_string(),
    }
}
