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

/// Every numeric key takes its range and refuses the worst values, naming the key; none of
/// them reaches a constructor that panics (`Semaphore::new`, a shift of `cache_mb`).
#[test]
fn numbers_outside_their_ranges() {
    let keys = [
        ("server", "max_connections"),
        ("server", "max_body_bytes"),
        ("server", "header_timeout_s"),
        ("store", "cache_mb"),
        ("auth", "login_attempts_per_minute"),
        ("pool", "workers"),
        ("pool", "queue_capacity"),
        ("public", "requests_per_minute_per_ip"),
        ("public", "default_link_rate_limit_per_minute"),
        ("voice", "max_sessions"),
        ("voice", "max_per_user"),
        ("agents.a", "max_concurrent"),
        ("agents.a", "queue_capacity"),
    ];
    for (section, key) in keys {
        for value in ["0", "2305843009213693952", "4294967295"] {
            // A u32 key refuses 2^61 while parsing, quoting the key's line.
            check(&format!("[{section}]\n{key} = {value}"), Err(key));
        }
    }
    for (section, key) in [
        ("server", "max_connections_per_client"),
        ("server", "shutdown_timeout_s"),
        ("voice", "min_speech_ms"),
        ("voice", "end_silence_ms"),
        ("voice", "barge_in_ms"),
    ] {
        check(&format!("[{section}]\n{key} = 0"), Ok(()));
        let text = format!("[{section}]\n{key} = 2305843009213693952");
        check(&text, Err(&format!("{section}.{key}: ")));
    }
    check("[auth]\ntoken_ttl = \"400d\"", Err("auth.token_ttl"));
    check("[auth]\ntoken_ttl = \"0s\"", Err("auth.token_ttl"));
    check("[agents.a]\ntimeout = \"8d\"", Err("agents.a.timeout"));
    check("[agents.a]\ntimeout = \"7d\"", Ok(()));
    check(
        "[agents.a]\nengine = { kind = \"echo\", delay_ms = 60001 }",
        Err("agents.a.engine.delay_ms"),
    );
    check(
        "[defaults]\nengine = { kind = \"echo\", delay_ms = 18446744073709551615 }",
        Err("defaults.engine.delay_ms"),
    );
    check("[voice]\nmax_duration = \"2d\"", Err("voice.max_duration"));
    check("[store]\ncache_mb = 65536", Ok(()));
    check("[pool]\nworkers = 1024", Ok(()));
    check("[server]\nmax_connections = -1", Err("invalid value"));
}
