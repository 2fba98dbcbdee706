//! Keeps `openapi.json` and the docs page honest about the router: every documented path is
//! one the router knows, every route is documented, and the pages load nothing from elsewhere.

#[cfg(test)]
mod tests {
    use super::super::{is_route_path, ops};
    use serde_json::Value;
    use std::collections::BTreeSet;

    /// Every (method, route template) that `dispatch` in `src/api.rs` matches. A route added
    /// there belongs here too, and then in `openapi.json`.
    const ROUTES: &[(&str, &str)] = &[
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/voice"),
        ("POST", "/api/token"),
        ("POST", "/token"),
        ("POST", "/api/auth/logout"),
        ("POST", "/api/tokens"),
        ("GET", "/api/tokens"),
        ("DELETE", "/api/tokens/{id}"),
        ("GET", "/api/users/me"),
        ("GET", "/api/users"),
        ("POST", "/api/users"),
        ("DELETE", "/api/users/{username}"),
        ("PUT", "/api/users/{username}/password"),
        ("GET", "/api/agents"),
        ("GET", "/api/agents/{name}"),
        ("POST", "/api/agents"),
        ("PATCH", "/api/agents/{name}"),
        ("DELETE", "/api/agents/{name}"),
        ("POST", "/api/agents/{name}/start"),
        ("POST", "/api/agents/{name}/stop"),
        ("GET", "/api/agents/{name}/shares"),
        ("POST", "/api/agents/{name}/shares"),
        ("DELETE", "/api/agents/{name}/shares/{username}"),
        ("POST", "/api/agents/{name}/chat"),
        ("POST", "/api/agents/{name}/task"),
        ("GET", "/api/agents/{name}/chat/sessions"),
        ("GET", "/api/agents/{name}/chat/sessions/{id}"),
        ("POST", "/api/agents/{name}/chat/sessions/{id}/close"),
        ("GET", "/api/agents/{name}/chat/history/persistent"),
        ("DELETE", "/api/agents/{name}/chat/history"),
        ("GET", "/api/agents/{name}/activity"),
        ("GET", "/api/agents/{name}/executions"),
        ("GET", "/api/agents/{name}/executions/running"),
        ("GET", "/api/agents/{name}/executions/{id}"),
        ("GET", "/api/agents/{name}/executions/{id}/stream"),
        ("POST", "/api/agents/{name}/executions/{id}/terminate"),
        ("POST", "/api/agents/{name}/public-links"),
        ("GET", "/api/agents/{name}/public-links"),
        ("PATCH", "/api/agents/{name}/public-links/{link_id}"),
        ("DELETE", "/api/agents/{name}/public-links/{link_id}"),
        ("GET", "/api/public/link/{token}"),
        ("POST", "/api/public/chat/{token}"),
        ("GET", "/api/public/history/{token}"),
        ("GET", "/p/{token}"),
        ("GET", "/api/paid/{agent}/info"),
        ("POST", "/api/paid/{agent}/chat"),
        ("OPTIONS", "/api/paid/{agent}/info"),
        ("OPTIONS", "/api/paid/{agent}/chat"),
        ("GET", "/api/paid/{agent}/receipts/{id}"),
        ("OPTIONS", "/api/paid/{agent}/receipts/{id}"),
        ("POST", "/api/agents/{name}/voice/start"),
        ("POST", "/api/agents/{name}/voice/stop"),
        ("GET", "/api/agents/{name}/voice/status"),
        ("GET", "/api/agents/{name}/voice/ws"),
    ];

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        serde_json::from_str(ops::OPENAPI).expect("openapi.json is valid JSON")
    }

    /// The path's segments with every `{param}` replaced by `x`, as the router sees them.
    fn concrete(template: &str) -> Vec<String> {
        template
            .split('/')
            .skip(1)
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    "x".to_string()
                } else {
                    s.to_string()
                }
            })
            .collect()
    }

    /// (METHOD, template) of every operation in the document.
    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let paths = doc["paths"].as_object().expect("paths is an object");
        let mut out = BTreeSet::new();
        for (template, item) in paths {
            let item = item.as_object().expect("a path item is an object");
            for method in METHODS.iter().filter(|m| item.contains_key(**m)) {
                out.insert((method.to_uppercase(), template.clone()));
            }
        }
        out
    }

    #[test]
    fn openapi_paths_are_routes() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths is an object");
        assert!(!paths.is_empty());
        for template in paths.keys() {
            let segments = concrete(template);
            let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
            assert!(
                is_route_path(&segments),
                "{template} is documented but the router has no such path"
            );
        }
    }

    #[test]
    fn openapi_documents_every_route() {
        let doc = document();
        let documented = documented(&doc);
        for (method, template) in ROUTES {
            let segments = concrete(template);
            let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
            assert!(is_route_path(&segments), "ROUTES has unknown {template}");
            assert!(
                documented.contains(&(method.to_string(), template.to_string())),
                "{method} {template} is routed but not in openapi.json"
            );
        }
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, t)| (m.to_string(), t.to_string()))
            .collect();
        let extra: Vec<_> = documented.difference(&routed).collect();
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    }

    #[test]
    fn openapi_operations_are_complete() {
        let doc = document();
        let mut ids = BTreeSet::new();
        for (method, template) in documented(&doc) {
            let op = &doc["paths"][&template][method.to_lowercase()];
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {template} has no operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            assert!(
                op["summary"].is_string(),
                "{method} {template} has no summary"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {template} has no success response"
            );
            let public = op
                .get("security")
                .is_some_and(|s| s == &Value::Array(vec![]));
            // Visitors of public links have no account: their routes take no token.
            let visitor = template.starts_with("/api/public/");
            if visitor {
                assert!(public, "{method} {template} is for visitors: security []");
            }
            // The paid routes take a payment instead of a token.
            let paid = template.starts_with("/api/paid/");
            if template.starts_with("/api/") && template != "/api/token" && !visitor && !paid {
                assert!(!public, "{method} {template} must need a bearer token");
                assert!(
                    responses.contains_key("401"),
                    "{method} {template} does not document 401"
                );
            }
        }
    }

    #[test]
    fn openapi_references_resolve() {
        fn walk(doc: &Value, node: &Value, bad: &mut Vec<String>) {
            match node {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        let found = target
                            .strip_prefix('#')
                            .and_then(|pointer| doc.pointer(pointer));
                        if found.is_none() {
                            bad.push(target.clone());
                        }
                    }
                    map.values().for_each(|v| walk(doc, v, bad));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(doc, v, bad)),
                _ => {}
            }
        }
        let doc = document();
        let mut bad = Vec::new();
        walk(&doc, &doc, &mut bad);
        assert!(bad.is_empty(), "unresolved $ref: {bad:?}");
    }

    #[test]
    fn the_public_chat_page_is_self_contained() {
        let page = include_str!("public_page.html");
        assert!(page.contains("/api/public/chat/"));
        assert!(
            !page.contains("://") && !page.contains("@import") && !page.contains("src="),
            "the public chat page must not load anything from another origin"
        );
    }

    #[test]
    fn the_voice_page_is_self_contained() {
        let page = include_str!("voice_page.html");
        assert!(page.contains("/voice/start") && page.contains("AudioEncoder"));
        assert!(
            !page.contains("://") && !page.contains("@import") && !page.contains("src="),
            "the voice page must not load anything from another origin"
        );
    }

    #[test]
    fn openapi_docs_page_is_self_contained() {
        let page = include_str!("docs.html");
        assert!(page.contains("/openapi.json"));
        assert!(
            !page.contains("://"),
            "the docs page must not load anything from another origin"
        );
    }
}
