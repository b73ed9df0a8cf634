use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(pairs: &[(&str, &str)]) -> Result<OtelSettings, SettingsError> {
    OtelSettings::load("sluice-proxy", &env(pairs), None)
}

#[test]
fn without_an_endpoint_traces_are_off() {
    let settings = load(&[("OTEL_SERVICE_NAME", "edge")]).unwrap();
    assert!(settings.traces.is_none());
    assert_eq!(settings.service_name, "edge");
    assert!(load(&[]).unwrap().traces.is_none());
    let disabled = load(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ("OTEL_SDK_DISABLED", "true"),
    ])
    .unwrap();
    assert!(disabled.traces.is_none());
    let none = load(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ])
    .unwrap();
    assert!(none.traces.is_none());
}

#[test]
fn the_specification_defaults_hold() {
    let settings = load(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap();
    let traces = settings.traces.unwrap();
    assert_eq!(traces.destination.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(
        traces.destination.endpoint.as_str(),
        "http://collector:4318/v1/traces"
    );
    assert_eq!(traces.destination.timeout, Duration::from_secs(10));
    assert_eq!(traces.schedule_delay, Duration::from_secs(5));
    assert_eq!(
        (traces.max_queue_size, traces.max_export_batch_size),
        (2048, 512)
    );
    assert_eq!(
        traces.sampler,
        Sampler {
            parent_based: true,
            ratio: 1.0
        }
    );
    assert_eq!(settings.service_name, "sluice-proxy");
}

#[test]
fn signal_settings_win_over_common_ones() {
    let traces = load(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://traces.example/custom",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-team=a%20b,api-key=common"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "Api-Key=traces"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2000"),
    ])
    .unwrap()
    .traces
    .unwrap();
    assert_eq!(traces.destination.protocol, OtlpProtocol::Grpc);
    assert_eq!(
        traces.destination.endpoint.as_str(),
        "https://traces.example/custom"
    );
    let headers: Vec<(&str, &str)> = traces
        .destination
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    assert_eq!(headers, vec![("x-team", "a b"), ("api-key", "traces")]);
    assert_eq!(traces.destination.timeout, Duration::from_secs(2));
    // gRPC takes the common endpoint as it is.
    let grpc = load(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ])
    .unwrap()
    .traces
    .unwrap();
    assert_eq!(grpc.destination.endpoint.as_str(), "http://collector:4317/");
}

#[test]
fn header_values_never_show_in_debug_output_or_errors() {
    let settings = load(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20canary-otel-secret",
        ),
    ])
    .unwrap();
    assert!(!format!("{settings:?}").contains("canary-otel-secret"));
    let error = load(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=canary-otel-secret%0A",
        ),
    ])
    .unwrap_err();
    assert!(!error.to_string().contains("canary-otel-secret"), "{error}");
}

#[test]
fn resource_attributes_name_the_service_unless_the_service_name_does() {
    let settings = load(&[(
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.name=from-resource, deployment.environment=prod%2Deu",
    )])
    .unwrap();
    assert_eq!(settings.service_name, "from-resource");
    assert_eq!(
        settings.resource,
        vec![("deployment.environment".to_owned(), "prod-eu".to_owned())]
    );
    let named = load(&[
        ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-resource"),
        ("OTEL_SERVICE_NAME", "from-name"),
    ])
    .unwrap();
    assert_eq!(named.service_name, "from-name");
}

#[test]
fn samplers_decide_as_the_specification_says() {
    let sampler = |name: &str, arg: &str| {
        load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", name),
            ("OTEL_TRACES_SAMPLER_ARG", arg),
        ])
        .map(|s| s.traces.unwrap().sampler)
    };
    let low = [0u8; 16];
    let high = [0xFFu8; 16];
    let half = sampler("traceidratio", "0.5").unwrap();
    assert!(
        half.samples(&low, Some(false)),
        "not parent-based: the ratio decides"
    );
    assert!(!half.samples(&high, Some(true)));
    let parent = sampler("parentbased_traceidratio", "0").unwrap();
    assert!(
        parent.samples(&low, Some(true)),
        "a sampled parent is honoured"
    );
    assert!(!parent.samples(&low, None));
    assert!(
        !sampler("parentbased_always_on", "")
            .unwrap()
            .samples(&low, Some(false))
    );
    assert!(!sampler("always_off", "").unwrap().samples(&low, Some(true)));
    assert!(
        sampler("always_on", "")
            .unwrap()
            .samples(&high, Some(false))
    );
    assert!(sampler("traceidratio", "1.5").is_err());
    assert!(sampler("jaeger_remote", "").is_err());
}

#[test]
fn the_file_table_is_read_under_the_environment_and_refuses_unknown_keys() {
    let table: BTreeMap<String, toml::Value> = toml::from_str(
        "exporter_otlp_endpoint = \"http://file:4318\"\nservice_name = \"from-file\"\ntraces_sampler_arg = 0.25\ntraces_sampler = \"traceidratio\"",
    )
    .unwrap();
    let settings = OtelSettings::load(
        "sluice-proxy",
        &env(&[("OTEL_SERVICE_NAME", "from-env")]),
        Some(&table),
    )
    .unwrap();
    assert_eq!(settings.service_name, "from-env");
    let traces = settings.traces.unwrap();
    assert_eq!(
        traces.destination.endpoint.as_str(),
        "http://file:4318/v1/traces"
    );
    assert_eq!(traces.sampler.ratio, 0.25);
    let typo: BTreeMap<String, toml::Value> =
        toml::from_str("exporter_otlp_endpoit = \"http://file:4318\"").unwrap();
    let error = OtelSettings::load("sluice-proxy", &[], Some(&typo)).unwrap_err();
    assert!(
        error.to_string().contains("otel.exporter_otlp_endpoit"),
        "{error}"
    );
}

#[test]
fn bad_values_name_their_variable() {
    for (pairs, key) in [
        (
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ],
            "OTEL_BSP_MAX_QUEUE_SIZE",
        ),
        (
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
            ],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
    ] {
        let error = load(&pairs).unwrap_err().to_string();
        assert!(error.contains(key), "{error}");
    }
}

#[test]
fn metrics_have_their_own_endpoint_interval_and_exporter() {
    let both = load(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1500"),
        ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "api-key=metrics"),
    ])
    .unwrap();
    let metrics = both.metrics.unwrap();
    assert_eq!(
        metrics.destination.endpoint.as_str(),
        "http://collector:4318/v1/metrics"
    );
    assert_eq!(metrics.interval, Duration::from_millis(1500));
    assert_eq!(metrics.destination.headers.len(), 1);
    assert!(
        both.traces.unwrap().destination.headers.is_empty(),
        "the metrics' own headers"
    );

    let only_metrics = load(&[
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://m:4318/custom",
        ),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
    ])
    .unwrap();
    assert!(only_metrics.traces.is_none());
    let metrics = only_metrics.metrics.unwrap();
    assert_eq!(
        metrics.destination.endpoint.as_str(),
        "http://m:4318/custom"
    );
    assert_eq!(metrics.destination.protocol, OtlpProtocol::Grpc);
    assert_eq!(metrics.interval, Duration::from_secs(60));

    for off in ["none", "prometheus"] {
        let settings = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_METRICS_EXPORTER", off),
        ])
        .unwrap();
        assert!(settings.metrics.is_none(), "{off}");
        assert!(settings.traces.is_some());
    }
    assert!(load(&[("OTEL_METRICS_EXPORTER", "statsd")]).is_err());
}
