//! Checks of the configuration: one `check(text, expected)` case per rule.

use super::*;

fn check(text: &str, expected: Result<(), &str>) {
    let result =
        parse(text).and_then(|raw| Config::from_raw(raw).map(|_| ()).map_err(|e| e.to_string()));
    match (result, expected) {
        (Ok(()), Ok(())) => {}
        (Err(got), Err(want)) => assert!(got.contains(want), "{got:?} lacks {want:?}"),
        (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn configs() {
    check("", Ok(()));
    check("[server]\nlisten = [\"127.0.0.1:9000\"]", Ok(()));
    check("[server]\nlisen = []", Err("unknown field `lisen`"));
    check("[server]\nlisten = [\"nowhere\"]", Err("server.listen"));
    check("[server]\nlisten = [\"0.0.0.0:80\"]", Err("tls.mode"));
    check(
        "[server]\nlisten = [\"0.0.0.0:80\"]\nallow_plain_on_network = true",
        Ok(()),
    );
    check("[tls]\nmode = \"maybe\"", Err("tls.mode"));
    check("[tls]\nmode = \"files\"", Err("tls.cert"));
    check("[auth]\ntoken_ttl = \"soon\"", Err("auth.token_ttl"));
    check("[agents.Bad]\n", Err("agents.Bad"));
    check("[agents.a]\ntimeout = \"5x\"", Err("agents.a.timeout"));
    check(
        "[agents.a]\nengine = { kind = \"robot\" }",
        Err("unknown variant"),
    );
    check(
        "[agents.a]\nengine = { kind = \"echo\", delay = 3 }",
        Err("unknown field `delay`"),
    );
    check(
        "[agents.a]\nengine = { kind = \"openai\", base_url = \"ftp://x\", model = \"m\" }",
        Err("agents.a.engine.base_url"),
    );
    check(
        "[agents.a]\nmax_concurrent = 0",
        Err("agents.a.max_concurrent"),
    );
    check("[voice]\n", Ok(()));
    check("[voice]\nmode = \"shout\"", Err("voice.mode"));
    check(
        "[voice]\nopus_complexity = 11",
        Err("voice.opus_complexity"),
    );
    check(
        "[voice]\nwrite_timeout_ms = 0",
        Err("voice.write_timeout_ms"),
    );
    check(
        "[voice]\nmax_duration = \"long\"",
        Err("voice.max_duration"),
    );
    check("[voice]\nidle_timeout = \"0s\"", Err("voice.idle_timeout"));
    check("[voice]\nidle_timeout = \"5s\"", Ok(()));
    check(
        "[voice]\nstt = { kind = \"command\", program = \"\" }",
        Err("voice.stt.program"),
    );
    check(
        "[public]\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]",
        Ok(()),
    );
    check(
        "[public]\ntrusted_proxies = [\"127.0.0.0/8\"]",
        Err("public.trusted_proxies"),
    );
    check(
        "[public]\nrequests_per_minute_per_ip = 0",
        Err("public.requests_per_minute_per_ip"),
    );
    // Above what a link may have: every link made without its own rate would be refused.
    check(
        "[public]\ndefault_link_rate_limit_per_minute = 10001",
        Err("public.default_link_rate_limit_per_minute"),
    );
    check(
        "[public]\ndefault_link_rate_limit_per_minute = 10000",
        Ok(()),
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
    assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
    assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
    assert!(parse_duration("").is_err());
    assert!(parse_duration("1w").is_err());
}

#[test]
fn layers_apply_in_order() {
    let env = |key: &str| match key {
        "OUTPOST_LISTEN" => Some("127.0.0.1:7000".to_string()),
        "OUTPOST_DATA_DIR" => Some("/tmp/from-env".to_string()),
        _ => None,
    };
    let config = load(&Overrides::default(), env).unwrap();
    assert_eq!(config.listen, vec!["127.0.0.1:7000".parse().unwrap()]);
    assert_eq!(config.data_dir, PathBuf::from("/tmp/from-env"));
    let flags = Overrides {
        listen: Some("127.0.0.1:7001".into()),
        ..Overrides::default()
    };
    let config = load(&flags, env).unwrap();
    assert_eq!(config.listen, vec!["127.0.0.1:7001".parse().unwrap()]);
}
