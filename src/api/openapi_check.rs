//! Keeps `openapi.json` and the docs page honest about the router: the document lists exactly
//! the operations of the route table (`routes.rs`), so a 405's `Allow` (read from the table)
//! says what the document says, and the pages load nothing from elsewhere.

#[cfg(test)]
mod tests {
    use super::super::ops;
    use super::super::routes::{self, ROUTES};
    use serde_json::Value;
    use std::collections::BTreeSet;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        serde_json::from_str(ops::OPENAPI).expect("openapi.json is valid JSON")
    }

    /// The path with every `{param}` replaced by `x`, as a client could send it.
    fn concrete(template: &str) -> String {
        let segments: Vec<&str> = template
            .split('/')
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    "x"
                } else {
                    s
                }
            })
            .collect();
        segments.join("/")
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
            assert!(
                routes::allowed(&concrete(template)).is_some(),
                "{template} is documented but the router has no such path"
            );
        }
    }

    /// The route table and the document list the same operations: because clients and the
    /// conformance tests read the document, and a 405's `Allow` is read from the table.
    #[test]
    fn openapi_documents_every_route() {
        let documented = documented(&document());
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|route| (route.method.to_string(), route.path.to_string()))
            .collect();
        assert_eq!(routed.len(), ROUTES.len(), "a route is listed twice");
        let missing: Vec<_> = routed.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "every route is in openapi.json, because clients read it; routed but not documented: {missing:?}"
        );
        let extra: Vec<_> = documented.difference(&routed).collect();
        assert!(
            extra.is_empty(),
            "openapi.json lists only routes, because clients call what it lists; documented but not routed: {extra:?}"
        );
    }

    /// For every documented path, a 405's `Allow` names the document's methods, with HEAD
    /// beside GET.
    #[test]
    fn allow_says_what_the_document_says() {
        let doc = document();
        let documented = documented(&doc);
        for template in doc["paths"].as_object().expect("paths").keys() {
            let mut methods: Vec<String> = documented
                .iter()
                .filter(|(_, t)| t == template)
                .map(|(m, _)| m.clone())
                .collect();
            methods.sort();
            if methods.iter().any(|m| m == "GET") {
                methods.push("HEAD".to_string());
            }
            assert_eq!(
                routes::allowed(&concrete(template)),
                Some(methods.join(", ")),
                "Allow of {template}"
            );
        }
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
