//! The rows of the authorization matrix: every route of `openapi.json`, who may call it, and
//! how to call it with real ids.

use super::callers::{Ids, Turn, Who, World, NOBODY, VAULT};
use hyper::Method;
use serde_json::{json, Value};

/// A well-formed receipt id that names no paid turn.
const NOBODY_RECEIPT: &str = "06h25n6p8vtdyszq6vvadz3a0va9k02r00g0";

/// Who a route is for, and its answer when the caller may use it.
#[derive(Clone, Copy, Debug)]
pub enum Access {
    /// The same answer whatever the token, or none.
    Open(u16),
    /// Any valid token.
    Token(u16),
    /// A valid full token (users may create agents in this world).
    Full(u16),
    /// An admin's full token; other users get 403.
    Admin(u16),
    /// Whoever sees the agent, with a token that allows one of `scopes`. With another user's ids a
    /// shared user gets `foreign_user`, the owner and admins `foreign_manager`.
    Use {
        scopes: &'static [&'static str],
        ok: u16,
        foreign_user: u16,
        foreign_manager: u16,
    },
    /// The agent's owner or an admin, with a full token; shared users get 403.
    Manage(u16),
}

/// What a cell needs made just for it, because the request uses it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    None,
    /// A new agent of olive's shared with sam (vault for `Ids::Vault`).
    Agent,
    /// The same, and vault is started again after the cell.
    StoppedAgent,
    /// A new public link of the agent.
    Link,
    /// A new user.
    User,
    /// The agent shared with `nobody`.
    Share,
    /// A new voice call by the user whose ids fill the path.
    Voice,
    /// A new token for the caller.
    Token,
    /// A new device token of olive's (its id is `fresh`).
    DeviceToken,
}

/// One cell's request.
pub struct Req {
    pub path: String,
    pub body: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
}

/// What a request is built from.
pub struct Ctx<'a> {
    pub world: &'a World,
    pub ids: Ids,
    /// The agent in the path.
    pub agent: String,
    /// The turn whose ids fill the path.
    pub turn: &'a Turn,
    /// What the setup made (an agent or user name, a link or voice session id).
    pub fresh: String,
    /// A number no other cell has.
    pub n: usize,
}

impl Ctx<'_> {
    fn path(&self, tail: &str) -> String {
        format!("/api/agents/{}{tail}", self.agent)
    }

    fn link_id(&self) -> &str {
        match self.ids {
            Ids::Own => &self.world.link.id,
            // Another agent's link under this agent's path.
            Ids::Foreign | Ids::Vault => &self.world.vault_link.id,
        }
    }
}

fn req(path: String) -> Req {
    Req {
        path,
        body: None,
        headers: Vec::new(),
    }
}

fn with_body(path: String, body: Value) -> Req {
    Req {
        path,
        body: Some(body),
        headers: Vec::new(),
    }
}

/// A row: one route.
pub struct Row {
    pub method: Method,
    pub template: &'static str,
    pub access: Access,
    pub variants: &'static [Ids],
    pub setup: Setup,
    /// Cells whose answer is not what `access` implies.
    pub except: &'static [(Who, Ids, u16)],
    pub request: fn(&Ctx) -> Req,
}

const ONE: &[Ids] = &[Ids::Own];
const AGENT_ONLY: &[Ids] = &[Ids::Own, Ids::Vault];
const WITH_IDS: &[Ids] = &[Ids::Own, Ids::Foreign, Ids::Vault];

fn use_chat(ok: u16) -> Access {
    Access::Use {
        scopes: &["chat"],
        ok,
        foreign_user: 404,
        foreign_manager: ok,
    }
}

/// Agents and their executions: chat devices and task devices alike.
fn use_read(ok: u16) -> Access {
    Access::Use {
        scopes: &["chat", "tasks"],
        ok,
        foreign_user: 404,
        foreign_manager: ok,
    }
}

fn row(
    method: Method,
    template: &'static str,
    access: Access,
    variants: &'static [Ids],
    request: fn(&Ctx) -> Req,
) -> Row {
    Row {
        method,
        template,
        access,
        variants,
        setup: Setup::None,
        except: &[],
        request,
    }
}

impl Row {
    fn setup(mut self, setup: Setup) -> Row {
        self.setup = setup;
        self
    }

    fn except(mut self, except: &'static [(Who, Ids, u16)]) -> Row {
        self.except = except;
        self
    }

    /// The documented answer for this caller and these ids.
    pub fn expected(&self, who: Who, ids: Ids) -> u16 {
        if let Some((_, _, status)) = self.except.iter().find(|(w, i, _)| *w == who && *i == ids) {
            return *status;
        }
        if let Access::Open(status) = self.access {
            return status;
        }
        if who.is_anonymous() {
            return 401;
        }
        let scoped = who.scope();
        let user = who.user();
        match self.access {
            Access::Open(status) | Access::Token(status) => status,
            Access::Full(status) => scoped.map_or(status, |_| 403),
            Access::Admin(status) if user == Who::Admin && scoped.is_none() => status,
            Access::Admin(_) => 403,
            Access::Use {
                scopes,
                ok,
                foreign_user,
                foreign_manager,
            } => match (user, ids) {
                _ if scoped.is_some_and(|s| !scopes.contains(&s)) => 403,
                (Who::Other, _) => 404,
                (Who::Shared | Who::Owner, Ids::Vault) => 404,
                (Who::Shared, Ids::Foreign) => foreign_user,
                (_, Ids::Foreign) => foreign_manager,
                _ => ok,
            },
            Access::Manage(ok) => match (user, ids) {
                _ if scoped.is_some() => 403,
                (Who::Other, _) => 404,
                (Who::Shared | Who::Owner, Ids::Vault) => 404,
                (Who::Shared, _) => 403,
                _ => ok,
            },
        }
    }
}

/// Every route, as documented.
pub fn rows() -> Vec<Row> {
    use Access::*;
    use Method as M;
    vec![
        row(M::GET, "/healthz", Open(200), ONE, |_| {
            req("/healthz".into())
        }),
        row(M::GET, "/readyz", Open(200), ONE, |_| req("/readyz".into())),
        // Loopback may read the metrics without a token; the matrix runs on loopback.
        row(M::GET, "/metrics", Open(200), ONE, |_| {
            req("/metrics".into())
        }),
        row(M::GET, "/openapi.json", Open(200), ONE, |_| {
            req("/openapi.json".into())
        }),
        row(M::GET, "/docs", Open(200), ONE, |_| req("/docs".into())),
        row(M::GET, "/voice", Open(200), ONE, |_| req("/voice".into())),
        row(M::POST, "/api/token", Open(200), ONE, |_| {
            login("/api/token")
        }),
        row(M::POST, "/token", Open(200), ONE, |_| login("/token")),
        row(M::POST, "/api/auth/logout", Token(200), ONE, |_| {
            req("/api/auth/logout".into())
        })
        .setup(Setup::Token),
        row(M::POST, "/api/tokens", Admin(201), ONE, |_| {
            with_body(
                "/api/tokens".into(),
                json!({"username": "sam", "scope": "chat"}),
            )
        }),
        row(M::GET, "/api/tokens", Full(200), ONE, |_| {
            req("/api/tokens".into())
        }),
        // Olive's device token: hers and an admin's to revoke; to anyone else it is not there.
        row(M::DELETE, "/api/tokens/{id}", Full(200), ONE, |c| {
            req(format!("/api/tokens/{}", c.fresh))
        })
        .setup(Setup::DeviceToken)
        .except(&[
            (Who::Other, Ids::Own, 404),
            (Who::Recreated, Ids::Own, 404),
            (Who::Shared, Ids::Own, 404),
        ]),
        row(M::GET, "/api/users/me", Token(200), ONE, |_| {
            req("/api/users/me".into())
        }),
        row(M::GET, "/api/users", Admin(200), ONE, |_| {
            req("/api/users".into())
        }),
        row(M::POST, "/api/users", Admin(201), ONE, |c| {
            let body = json!({"username": format!("made-{}", c.n), "password": "a-long-password"});
            with_body("/api/users".into(), body)
        }),
        // A fresh user's: users may change only their own.
        row(
            M::PUT,
            "/api/users/{username}/password",
            Admin(200),
            ONE,
            |c| {
                let body = json!({"password": "another-long-password"});
                with_body(format!("/api/users/{}/password", c.fresh), body)
            },
        )
        .setup(Setup::User),
        row(M::DELETE, "/api/users/{username}", Admin(200), ONE, |c| {
            req(format!("/api/users/{}", c.fresh))
        })
        .setup(Setup::User),
        row(M::GET, "/api/agents", use_read(200), ONE, |_| {
            req("/api/agents".into())
        })
        // The list answers everyone with a token (the leak check reads what it lists).
        .except(&[(Who::Other, Ids::Own, 200), (Who::Recreated, Ids::Own, 200)]),
        row(M::POST, "/api/agents", Full(201), ONE, |c| {
            with_body(
                "/api/agents".into(),
                json!({"name": format!("made-{}", c.n)}),
            )
        }),
        row(
            M::GET,
            "/api/agents/{name}",
            use_read(200),
            AGENT_ONLY,
            |c| req(c.path("")),
        ),
        row(
            M::PATCH,
            "/api/agents/{name}",
            Manage(200),
            AGENT_ONLY,
            |c| with_body(c.path(""), json!({"description": "changed"})),
        )
        .except(&[(Who::Admin, Ids::Vault, 409)]),
        row(
            M::DELETE,
            "/api/agents/{name}",
            Manage(200),
            AGENT_ONLY,
            |c| req(c.path("")),
        )
        .setup(Setup::Agent)
        .except(&[(Who::Admin, Ids::Vault, 409)]),
        row(
            M::POST,
            "/api/agents/{name}/start",
            Manage(200),
            AGENT_ONLY,
            |c| req(c.path("/start")),
        ),
        row(
            M::POST,
            "/api/agents/{name}/stop",
            Manage(200),
            AGENT_ONLY,
            |c| req(c.path("/stop")),
        )
        .setup(Setup::StoppedAgent),
        row(
            M::GET,
            "/api/agents/{name}/shares",
            Manage(200),
            AGENT_ONLY,
            |c| req(c.path("/shares")),
        ),
        row(
            M::POST,
            "/api/agents/{name}/shares",
            Manage(201),
            AGENT_ONLY,
            |c| with_body(c.path("/shares"), json!({"username": NOBODY})),
        ),
        row(
            M::DELETE,
            "/api/agents/{name}/shares/{username}",
            Manage(200),
            AGENT_ONLY,
            |c| req(c.path(&format!("/shares/{NOBODY}"))),
        )
        .setup(Setup::Share),
        row(
            M::POST,
            "/api/agents/{name}/chat",
            chat_access("chat"),
            WITH_IDS,
            |c| {
                let mut r = with_body(c.path("/chat"), turn_body(c));
                r.headers.push(("accept", "application/json".into()));
                r
            },
        ),
        row(
            M::POST,
            "/api/agents/{name}/task",
            chat_access("tasks"),
            WITH_IDS,
            |c| with_body(c.path("/task"), turn_body(c)),
        ),
        row(
            M::GET,
            "/api/agents/{name}/chat/sessions",
            use_chat(200),
            AGENT_ONLY,
            |c| req(c.path("/chat/sessions")),
        ),
        row(
            M::GET,
            "/api/agents/{name}/chat/sessions/{id}",
            use_chat(200),
            WITH_IDS,
            |c| req(c.path(&format!("/chat/sessions/{}", c.turn.session))),
        ),
        row(
            M::POST,
            "/api/agents/{name}/chat/sessions/{id}/close",
            use_chat(200),
            WITH_IDS,
            |c| req(c.path(&format!("/chat/sessions/{}/close", c.turn.session))),
        ),
        // With another user's ids: `?user=` them, which only the owner and admins may.
        row(
            M::GET,
            "/api/agents/{name}/chat/history/persistent",
            owner_level_query(),
            WITH_IDS,
            |c| match c.ids {
                Ids::Foreign => req(c.path(&format!(
                    "/chat/history/persistent?user={}",
                    c.turn.username
                ))),
                _ => req(c.path("/chat/history/persistent")),
            },
        ),
        // With another user's ids: `?all=true`, which only the owner and admins may.
        row(
            M::DELETE,
            "/api/agents/{name}/chat/history",
            owner_level_query(),
            WITH_IDS,
            |c| match c.ids {
                Ids::Foreign => req(c.path("/chat/history?all=true")),
                _ => req(c.path("/chat/history")),
            },
        ),
        row(
            M::GET,
            "/api/agents/{name}/activity",
            use_chat(200),
            AGENT_ONLY,
            |c| req(c.path("/activity")),
        ),
        row(
            M::GET,
            "/api/agents/{name}/executions",
            use_read(200),
            AGENT_ONLY,
            |c| req(c.path("/executions")),
        ),
        row(
            M::GET,
            "/api/agents/{name}/executions/running",
            use_read(200),
            AGENT_ONLY,
            |c| req(c.path("/executions/running")),
        ),
        row(
            M::GET,
            "/api/agents/{name}/executions/{id}",
            use_read(200),
            WITH_IDS,
            |c| req(c.path(&format!("/executions/{}", c.turn.execution))),
        ),
        row(
            M::GET,
            "/api/agents/{name}/executions/{id}/stream",
            use_read(200),
            WITH_IDS,
            |c| req(c.path(&format!("/executions/{}/stream", c.turn.execution))),
        ),
        row(
            M::POST,
            "/api/agents/{name}/executions/{id}/terminate",
            use_read(200),
            WITH_IDS,
            |c| req(c.path(&format!("/executions/{}/terminate", c.turn.execution))),
        ),
        row(
            M::POST,
            "/api/agents/{name}/public-links",
            Manage(201),
            AGENT_ONLY,
            |c| with_body(c.path("/public-links"), json!({})),
        ),
        row(
            M::GET,
            "/api/agents/{name}/public-links",
            Manage(200),
            AGENT_ONLY,
            |c| req(c.path("/public-links")),
        ),
        // With foreign ids: vault's link under atelier's path, which is no link of atelier.
        row(
            M::PATCH,
            "/api/agents/{name}/public-links/{link_id}",
            Manage(200),
            WITH_IDS,
            |c| {
                let path = c.path(&format!("/public-links/{}", c.link_id()));
                with_body(path, json!({"name": "renamed"}))
            },
        )
        .except(&[
            (Who::Owner, Ids::Foreign, 404),
            (Who::Admin, Ids::Foreign, 404),
        ]),
        row(
            M::DELETE,
            "/api/agents/{name}/public-links/{link_id}",
            Manage(200),
            AGENT_ONLY,
            |c| req(c.path(&format!("/public-links/{}", c.fresh))),
        )
        .setup(Setup::Link),
        row(M::GET, "/api/public/link/{token}", Open(200), ONE, |c| {
            req(format!("/api/public/link/{}", c.world.link.token))
        }),
        row(M::POST, "/api/public/chat/{token}", Open(200), ONE, |c| {
            let path = format!("/api/public/chat/{}", c.world.link.token);
            with_body(path, json!({"message": "hello"}))
        }),
        row(M::GET, "/api/public/history/{token}", Open(200), ONE, |c| {
            let (token, session) = (&c.world.link.token, &c.world.visitor_session);
            req(format!("/api/public/history/{token}?session_id={session}"))
        }),
        row(M::GET, "/p/{token}", Open(200), ONE, |c| {
            req(format!("/p/{}", c.world.link.token))
        }),
        row(M::GET, "/api/paid/{agent}/info", Open(200), ONE, |_| {
            req(format!("/api/paid/{VAULT}/info"))
        }),
        // No payment: the challenge, whoever asks.
        row(M::POST, "/api/paid/{agent}/chat", Open(402), ONE, |_| {
            with_body(format!("/api/paid/{VAULT}/chat"), json!({"message": "hi"}))
        }),
        // Without the payment it was paid with, a receipt is not found, whoever asks.
        row(
            M::GET,
            "/api/paid/{agent}/receipts/{id}",
            Open(404),
            ONE,
            |_| req(format!("/api/paid/{VAULT}/receipts/{NOBODY_RECEIPT}")),
        ),
        row(
            M::OPTIONS,
            "/api/paid/{agent}/receipts/{id}",
            Open(204),
            ONE,
            |_| req(format!("/api/paid/{VAULT}/receipts/{NOBODY_RECEIPT}")),
        ),
        row(M::OPTIONS, "/api/paid/{agent}/info", Open(204), ONE, |_| {
            req(format!("/api/paid/{VAULT}/info"))
        }),
        row(M::OPTIONS, "/api/paid/{agent}/chat", Open(204), ONE, |_| {
            req(format!("/api/paid/{VAULT}/chat"))
        }),
        row(
            M::POST,
            "/api/agents/{name}/voice/start",
            voice_access(201),
            AGENT_ONLY,
            |c| with_body(c.path("/voice/start"), json!({})),
        ),
        // Another user's call: 403 for a user, the owner and admins may end it (voice.md).
        row(
            M::POST,
            "/api/agents/{name}/voice/stop",
            Access::Use {
                scopes: &["voice"],
                ok: 200,
                foreign_user: 403,
                foreign_manager: 200,
            },
            WITH_IDS,
            |c| with_body(c.path("/voice/stop"), json!({"voice_session_id": c.fresh})),
        )
        .setup(Setup::Voice),
        row(
            M::GET,
            "/api/agents/{name}/voice/status",
            voice_access(200),
            AGENT_ONLY,
            |c| req(c.path("/voice/status")),
        ),
        // Another user's call is not yours, whoever you are (voice.md: 4003 not yours).
        row(
            M::GET,
            "/api/agents/{name}/voice/ws",
            Access::Use {
                scopes: &["voice"],
                ok: 101,
                foreign_user: 403,
                foreign_manager: 403,
            },
            WITH_IDS,
            |c| {
                let mut r = req(c.path(&format!("/voice/ws?voice_session_id={}", c.fresh)));
                r.headers = vec![
                    ("connection", "upgrade".into()),
                    ("upgrade", "websocket".into()),
                    ("sec-websocket-version", "13".into()),
                    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".into()),
                ];
                r
            },
        )
        .setup(Setup::Voice),
    ]
}

/// Chat and tasks: with another user's session, the session is not the caller's (404), also
/// for the owner and admins.
fn chat_access(scope: &'static str) -> Access {
    Access::Use {
        scopes: match scope {
            "tasks" => &["tasks"],
            _ => &["chat"],
        },
        ok: 200,
        foreign_user: 404,
        foreign_manager: 404,
    }
}

fn voice_access(ok: u16) -> Access {
    Access::Use {
        scopes: &["voice"],
        ok,
        foreign_user: 404,
        foreign_manager: ok,
    }
}

/// Routes whose owner-level query (`?user=`, `?all=true`) a shared user may not use (403).
fn owner_level_query() -> Access {
    Access::Use {
        scopes: &["chat"],
        ok: 200,
        foreign_user: 403,
        foreign_manager: 200,
    }
}

/// A turn's body: with another user's ids, their session.
fn turn_body(c: &Ctx) -> Value {
    match c.ids {
        Ids::Foreign => json!({"message": "hi", "session_id": c.turn.session}),
        _ => json!({"message": "hi"}),
    }
}

fn login(path: &str) -> Req {
    with_body(
        path.into(),
        json!({"username": "olive", "password": "olive-password"}),
    )
}
