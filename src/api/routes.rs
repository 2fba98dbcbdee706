//! The route table: every (method, path pattern, handler) the API answers, in one list.
//! Dispatch reads it to find a request's handler, a 405 reads it for its `Allow` header, and
//! `openapi_check.rs` reads it to hold `openapi.json` to exactly these routes.
//!
//! A pattern is a path whose `{param}` segments match any one segment; the first route whose
//! method and pattern fit a request answers it, so a literal path is listed before a pattern
//! it would otherwise fall under (`executions/running` before `executions/{id}`).

use super::{
    agents, chat, executions, links, ops, paid, public, sessions, tasks, token, tokens, users,
    voice, Api,
};
use crate::error::ApiResult;
use hyper::body::Incoming;
use hyper::{Method, Request};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

/// The most `{param}` segments of any pattern.
pub const MAX_PARAMS: usize = 2;

/// A request matched to a route: what every handler is given.
pub struct Routed<'a> {
    pub app: &'a Api,
    pub request: Request<Incoming>,
    pub peer: SocketAddr,
    /// The path's `{param}` segments as sent, in the pattern's order; `""` past the last.
    pub params: [&'a str; MAX_PARAMS],
}

/// The future of a handler that awaits: boxed, as every async handler's future is its own
/// type.
pub type Pending<'a> = Pin<Box<dyn Future<Output = ApiResult> + Send + 'a>>;

/// How a route answers.
pub enum Handler {
    /// At once: nothing to await, nothing boxed (health, pages, the agent list).
    Now(for<'a> fn(Routed<'a>) -> ApiResult),
    /// Through a service it awaits.
    Later(for<'a> fn(Routed<'a>) -> Pending<'a>),
}

use Handler::{Later, Now};

/// A handler that awaits: `later!(r => call(r.app, ...))` is the [`Later`] handler that
/// boxes `call(...).await`, borrowing the request it is given.
macro_rules! later {
    ($r:ident => $call:expr) => {
        Later(|$r| Box::pin(async move { $call.await }))
    };
}

/// One route.
pub struct Route {
    pub method: Method,
    /// The path pattern, as `openapi.json` spells it (`/api/agents/{name}/chat`).
    pub path: &'static str,
    /// The metrics label: the pattern, except for an alias, counted as what it stands for.
    pub label: &'static str,
    handler: Handler,
    /// How many segments the pattern has, so most routes are passed over at a glance.
    segments: usize,
}

impl Route {
    const fn new(method: Method, path: &'static str, handler: Handler) -> Route {
        Route {
            method,
            path,
            label: path,
            handler,
            segments: segment_count(path),
        }
    }

    /// This route counted in the metrics as `label`.
    const fn counted_as(mut self, label: &'static str) -> Route {
        self.label = label;
        self
    }

    /// The `{param}` segments of `path` when the pattern fits it.
    fn fit<'p>(&self, path: &'p str) -> Option<[&'p str; MAX_PARAMS]> {
        if self.segments != segment_count(path) {
            return None;
        }
        let mut params = [""; MAX_PARAMS];
        let mut taken = 0;
        for (want, given) in self.path.split('/').zip(path.split('/')) {
            if is_param(want) {
                *params.get_mut(taken)? = given;
                taken += 1;
            } else if want != given {
                return None;
            }
        }
        Some(params)
    }

    /// How many segments of the pattern are literal: the more, the closer it fits a path.
    fn literals(&self) -> usize {
        self.path
            .split('/')
            .skip(1)
            .filter(|s| !is_param(s))
            .count()
    }

    /// Runs the handler.
    pub async fn answer(&self, routed: Routed<'_>) -> ApiResult {
        match self.handler {
            Now(handler) => handler(routed),
            Later(handler) => handler(routed).await,
        }
    }
}

const fn segment_count(path: &str) -> usize {
    let bytes = path.as_bytes();
    let (mut at, mut count) = (0, 0);
    while at < bytes.len() {
        if bytes[at] == b'/' {
            count += 1;
        }
        at += 1;
    }
    count
}

fn is_param(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

const fn get(path: &'static str, handler: Handler) -> Route {
    Route::new(Method::GET, path, handler)
}

const fn post(path: &'static str, handler: Handler) -> Route {
    Route::new(Method::POST, path, handler)
}

const fn put(path: &'static str, handler: Handler) -> Route {
    Route::new(Method::PUT, path, handler)
}

const fn patch(path: &'static str, handler: Handler) -> Route {
    Route::new(Method::PATCH, path, handler)
}

const fn delete(path: &'static str, handler: Handler) -> Route {
    Route::new(Method::DELETE, path, handler)
}

const fn options(path: &'static str, handler: Handler) -> Route {
    Route::new(Method::OPTIONS, path, handler)
}

/// Every route. A route added here belongs in `openapi.json` too (`openapi_check.rs`).
pub static ROUTES: &[Route] = &[
    get("/healthz", Now(|_| ops::healthz())),
    get("/readyz", later!(r => ops::readyz(r.app))),
    get("/metrics", Now(|r| ops::metrics(r.app, &r.request, r.peer))),
    get("/openapi.json", Now(|_| ops::openapi())),
    get("/docs", Now(|_| ops::docs())),
    get("/voice", Now(|_| voice::page())),
    post(
        "/api/token",
        later!(r => token::create_token(r.app, r.request, r.peer)),
    ),
    post(
        "/token",
        later!(r => token::create_token(r.app, r.request, r.peer)),
    )
    .counted_as("/api/token"),
    post(
        "/api/auth/logout",
        later!(r => token::logout(r.app, r.request)),
    ),
    post(
        "/api/tokens",
        later!(r => token::issue_device_token(r.app, r.request)),
    ),
    get(
        "/api/tokens",
        later!(r => tokens::list_tokens(r.app, &r.request)),
    ),
    delete(
        "/api/tokens/{id}",
        later!(r => tokens::revoke_token(r.app, &r.request, r.params[0])),
    ),
    get("/api/users/me", later!(r => users::me(r.app, &r.request))),
    get(
        "/api/users",
        later!(r => users::list_users(r.app, &r.request)),
    ),
    post(
        "/api/users",
        later!(r => users::create_user(r.app, r.request)),
    ),
    put(
        "/api/users/{username}/password",
        later!(r => users::set_password(r.app, r.request, r.params[0])),
    ),
    delete(
        "/api/users/{username}",
        later!(r => users::delete_user(r.app, &r.request, r.params[0])),
    ),
    get(
        "/api/agents",
        Now(|r| agents::list_agents(r.app, &r.request)),
    ),
    post(
        "/api/agents",
        later!(r => agents::create_agent(r.app, r.request)),
    ),
    get(
        "/api/agents/{name}",
        Now(|r| agents::get_agent(r.app, &r.request, r.params[0])),
    ),
    patch(
        "/api/agents/{name}",
        later!(r => agents::patch_agent(r.app, r.request, r.params[0])),
    ),
    delete(
        "/api/agents/{name}",
        later!(r => agents::delete_agent(r.app, &r.request, r.params[0])),
    ),
    post(
        "/api/agents/{name}/start",
        later!(r => agents::set_agent_stopped(r.app, &r.request, r.params[0], false)),
    ),
    post(
        "/api/agents/{name}/stop",
        later!(r => agents::set_agent_stopped(r.app, &r.request, r.params[0], true)),
    ),
    get(
        "/api/agents/{name}/shares",
        later!(r => agents::list_shares(r.app, &r.request, r.params[0])),
    ),
    post(
        "/api/agents/{name}/shares",
        later!(r => agents::add_share(r.app, r.request, r.params[0])),
    ),
    delete(
        "/api/agents/{name}/shares/{username}",
        later!(r => agents::remove_share(r.app, &r.request, r.params[0], r.params[1])),
    ),
    post(
        "/api/agents/{name}/chat",
        later!(r => chat::chat(r.app, r.request, r.params[0])),
    ),
    post(
        "/api/agents/{name}/task",
        later!(r => tasks::submit_task(r.app, r.request, r.params[0])),
    ),
    get(
        "/api/agents/{name}/chat/sessions",
        later!(r => sessions::list_sessions(r.app, &r.request, r.params[0])),
    ),
    get(
        "/api/agents/{name}/chat/sessions/{id}",
        later!(r => sessions::get_session(r.app, &r.request, r.params[0], r.params[1])),
    ),
    post(
        "/api/agents/{name}/chat/sessions/{id}/close",
        later!(r => sessions::close_session(r.app, &r.request, r.params[0], r.params[1])),
    ),
    get(
        "/api/agents/{name}/chat/history/persistent",
        later!(r => sessions::persistent_history(r.app, &r.request, r.params[0])),
    ),
    delete(
        "/api/agents/{name}/chat/history",
        later!(r => sessions::reset_history(r.app, &r.request, r.params[0])),
    ),
    get(
        "/api/agents/{name}/activity",
        later!(r => sessions::activity(r.app, &r.request, r.params[0])),
    ),
    get(
        "/api/agents/{name}/executions",
        later!(r => executions::list_executions(r.app, &r.request, r.params[0])),
    ),
    get(
        "/api/agents/{name}/executions/running",
        later!(r => executions::running_executions(r.app, &r.request, r.params[0])),
    ),
    get(
        "/api/agents/{name}/executions/{id}",
        later!(r => executions::get_execution(r.app, &r.request, r.params[0], r.params[1])),
    ),
    get(
        "/api/agents/{name}/executions/{id}/stream",
        later!(r => executions::stream_execution(r.app, &r.request, r.params[0], r.params[1])),
    ),
    post(
        "/api/agents/{name}/executions/{id}/terminate",
        later!(r => executions::terminate_execution(r.app, &r.request, r.params[0], r.params[1])),
    ),
    post(
        "/api/agents/{name}/public-links",
        later!(r => links::create_link(r.app, r.request, r.params[0])),
    ),
    get(
        "/api/agents/{name}/public-links",
        later!(r => links::list_links(r.app, &r.request, r.params[0])),
    ),
    patch(
        "/api/agents/{name}/public-links/{link_id}",
        later!(r => links::patch_link(r.app, r.request, r.params[0], r.params[1],)),
    ),
    delete(
        "/api/agents/{name}/public-links/{link_id}",
        later!(r => links::delete_link(r.app, &r.request, r.params[0], r.params[1])),
    ),
    get(
        "/api/public/link/{token}",
        later!(r => public::get_link(r.app, &r.request, r.peer, r.params[0])),
    ),
    post(
        "/api/public/chat/{token}",
        later!(r => public::chat(r.app, r.request, r.peer, r.params[0])),
    ),
    get(
        "/api/public/history/{token}",
        later!(r => public::history(r.app, &r.request, r.peer, r.params[0])),
    ),
    get("/p/{token}", Now(|_| public::page())),
    get(
        "/api/paid/{agent}/info",
        Now(|r| paid::paid_info(r.app, &r.request, r.params[0])),
    ),
    post(
        "/api/paid/{agent}/chat",
        later!(r => paid::paid_chat(r.app, r.request, r.params[0])),
    ),
    get(
        "/api/paid/{agent}/receipts/{id}",
        later!(r => paid::paid_receipt(r.app, &r.request, r.params[0], r.params[1])),
    ),
    options(
        "/api/paid/{agent}/receipts/{id}",
        Now(|_| paid::paid_preflight()),
    ),
    options("/api/paid/{agent}/info", Now(|_| paid::paid_preflight())),
    options("/api/paid/{agent}/chat", Now(|_| paid::paid_preflight())),
    post(
        "/api/agents/{name}/voice/start",
        later!(r => voice::start_voice(r.app, r.request, r.params[0])),
    ),
    post(
        "/api/agents/{name}/voice/stop",
        later!(r => voice::stop_voice(r.app, r.request, r.params[0])),
    ),
    get(
        "/api/agents/{name}/voice/status",
        later!(r => voice::voice_status(r.app, &r.request, r.params[0])),
    ),
    get(
        "/api/agents/{name}/voice/ws",
        later!(r => voice::voice_socket(r.app, r.request, r.params[0])),
    ),
];

/// The first route for `method` whose pattern fits `path`, and the path's `{param}` segments.
pub fn find<'p>(method: &Method, path: &'p str) -> Option<(&'static Route, [&'p str; MAX_PARAMS])> {
    ROUTES
        .iter()
        .filter(|route| route.method == *method)
        .find_map(|route| route.fit(path).map(|params| (route, params)))
}

/// The methods routed for `path`, as a 405's `Allow` names them (RFC 9110 requires it), or
/// `None` when no route has this path. Of the patterns that fit, those with the most literal
/// segments count, as OpenAPI matches concrete paths before templated ones (`/api/users/me`
/// is not `/api/users/{username}`); the methods are sorted, with HEAD after them wherever GET
/// is, since every GET route answers HEAD.
pub fn allowed(path: &str) -> Option<String> {
    let fitting: Vec<&Route> = ROUTES.iter().filter(|r| r.fit(path).is_some()).collect();
    let most = fitting.iter().map(|route| route.literals()).max()?;
    let mut methods: Vec<&str> = fitting
        .iter()
        .filter(|route| route.literals() == most)
        .map(|route| route.method.as_str())
        .collect();
    methods.sort_unstable();
    methods.dedup();
    if methods.contains(&"GET") {
        methods.push("HEAD");
    }
    Some(methods.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pattern with every `{param}` replaced by `x`, as a client could send it.
    fn concrete(pattern: &str) -> String {
        let segments: Vec<&str> = pattern
            .split('/')
            .map(|s| if is_param(s) { "x" } else { s })
            .collect();
        segments.join("/")
    }

    #[test]
    fn every_route_is_reached_by_its_own_pattern() {
        for route in ROUTES {
            let (found, _) = find(&route.method, &concrete(route.path)).expect(route.path);
            assert!(
                std::ptr::eq(found, route),
                "{} {} is shadowed by {} {} listed before it",
                route.method,
                route.path,
                found.method,
                found.path
            );
        }
    }

    #[test]
    fn every_pattern_fits_in_the_params() {
        for route in ROUTES {
            let params = route.path.split('/').filter(|s| is_param(s)).count();
            assert!(params <= MAX_PARAMS, "{} has {params} params", route.path);
            assert!(
                route.path.starts_with('/'),
                "{} is not absolute",
                route.path
            );
        }
    }

    #[test]
    fn params_come_in_the_patterns_order() {
        let (route, params) = find(&Method::GET, "/api/agents/a/executions/b/stream").unwrap();
        assert_eq!(route.path, "/api/agents/{name}/executions/{id}/stream");
        assert_eq!(params, ["a", "b"]);
        let (route, _) = find(&Method::GET, "/api/agents/a/executions/running").unwrap();
        assert_eq!(route.path, "/api/agents/{name}/executions/running");
        assert!(find(&Method::GET, "/api/agents/a/executions/b/c/d").is_none());
        assert!(find(&Method::GET, "*").is_none());
    }

    #[test]
    fn allow_names_the_closest_patterns_methods() {
        assert_eq!(allowed("/api/users/me").as_deref(), Some("GET, HEAD"));
        assert_eq!(allowed("/api/users/bob").as_deref(), Some("DELETE"));
        assert_eq!(
            allowed("/api/agents/a").as_deref(),
            Some("DELETE, GET, PATCH, HEAD")
        );
        assert_eq!(
            allowed("/api/paid/a/info").as_deref(),
            Some("GET, OPTIONS, HEAD")
        );
        assert_eq!(allowed("/api/agents/a/chat").as_deref(), Some("POST"));
        assert_eq!(allowed("/api"), None);
        assert_eq!(allowed("/api/"), None);
        assert_eq!(allowed("/nowhere"), None);
    }
}
