//! How much CPU one usage record costs the control plane to store, per backend.
//!
//!   cargo bench -p sluice-control-plane --bench usage_ingest
//!   BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench ...
//!
//! Commits batches shaped like a proxy's (UUIDv7 request ids, start times rising, one project
//! and key) into a fresh store and prints CPU time per record — this process's (the store's
//! worker threads included) and, for PostgreSQL, the server's — and wall time per record. The
//! proxy benchmark (`sluice-bench`) runs the control plane beside the proxy on the same cores,
//! so this cost comes straight out of the proxy's throughput there.
//!
//! Then it stores 1,000,000 records (`BENCH_QUERY_RECORDS`) spread over seven days, four
//! projects, five keys each, three models and both sources, and times the spend queries an
//! operator runs over them (best of five).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sluice_control_plane::store::postgres::PostgresStore;
use sluice_control_plane::store::sqlite::SqliteStore;
use sluice_control_plane::store::{
    Audit, Delivery, NewOrganization, NewProject, NewUsageBatch, Store, UsageGroup, UsageQuery,
    UsageRecord, UsageSource,
};
use sluice_shared::ids::new_id;
use sqlx::Connection;

/// Records per run, and per batch unless `BENCH_BATCH_SIZE` says otherwise (the proxy's default
/// batch is 5000 records).
const RECORDS: usize = 150_000;
const DEFAULT_BATCH_SIZE: usize = 5_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        report("sqlite", measure(&store).await);
        store.close().await;
        let url = format!("sqlite://{}", dir.path().join("queries.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        queries("sqlite", &store).await;
        store.close().await;
        if let Ok(admin_url) = std::env::var("BENCH_POSTGRES_URL") {
            postgres(&admin_url).await;
        }
    });
}

/// In a database of its own, dropped afterwards.
async fn postgres(admin_url: &str) {
    let name = format!("sluice_bench_{}", new_id().replace('-', ""));
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("a URL ending in /database");
    let store = PostgresStore::open(&format!("{base}/{name}"))
        .await
        .unwrap();
    let server_before = postgres_server_cpu();
    let mut measured = measure(&store).await;
    measured.cpu += postgres_server_cpu() - server_before;
    report("postgres (this process + server)", measured);
    queries("postgres", &store).await;
    store.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

struct Measured {
    records: usize,
    cpu: Duration,
    wall: Duration,
}

async fn measure<S: Store>(store: &S) -> Measured {
    let project_id = new_id();
    let virtual_key_id = new_id();
    let provider_id = new_id();
    let batch_size = batch_size();
    // Start times rise across batches, as they do in traffic.
    let mut started_at_us = 1_790_000_000_000_000_i64;
    let batches: Vec<Vec<UsageRecord>> = (0..RECORDS / batch_size)
        .map(|_| {
            (0..batch_size)
                .map(|_| UsageRecord {
                    request_id: new_id(),
                    started_at_us: {
                        started_at_us += 25;
                        started_at_us
                    },
                    project_id: project_id.clone(),
                    virtual_key_id: virtual_key_id.clone(),
                    model: "bench".to_owned(),
                    provider_id: provider_id.clone(),
                    input_tokens: 12,
                    output_tokens: 8,
                    cached_input_tokens: 0,
                    reasoning_tokens: 0,
                    cost_micros: 42,
                    latency_ms: 1,
                    http_status: 200,
                    source: UsageSource::ProviderReported,
                    run_id: String::new(),
                    task_id: String::new(),
                    tags: Vec::new(),
                    lease_epoch: 0,
                    attempts: 0,
                })
                .collect()
        })
        .collect();
    let cpu_before = process_cpu();
    let started = Instant::now();
    for records in batches {
        store
            .commit_usage_batch(
                &new_id(),
                "bench-proxy",
                "hash",
                Delivery::First,
                NewUsageBatch::from_records(records),
            )
            .await
            .unwrap();
    }
    Measured {
        records: RECORDS / batch_size * batch_size,
        cpu: process_cpu() - cpu_before,
        wall: started.elapsed(),
    }
}

/// Stores `BENCH_QUERY_RECORDS` records over a week of traffic and times the spend queries.
async fn queries<S: Store>(backend: &str, store: &S) {
    const PROJECTS: usize = 4;
    const KEYS_PER_PROJECT: usize = 5;
    const MODELS: [&str; 3] = ["gpt-4o", "gpt-4o-mini", "claude-sonnet"];
    let records: usize = std::env::var("BENCH_QUERY_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let audit = || Audit::new("bench", "bench", "bench");
    store
        .create_organization(
            NewOrganization {
                name: "bench".into(),
                display_name: String::new(),
            },
            audit(),
        )
        .await
        .unwrap();
    let mut projects = Vec::new();
    for n in 0..PROJECTS {
        let project = store
            .create_project(
                "bench",
                NewProject {
                    name: format!("app-{n}"),
                    display_name: String::new(),
                    default_model: String::new(),
                    content_capture_bytes: 0,
                    metrics_by_key: false,
                },
                audit(),
            )
            .await
            .unwrap();
        let keys: Vec<String> = (0..KEYS_PER_PROJECT).map(|_| new_id()).collect();
        projects.push((project.id, keys));
    }
    let provider_id = new_id();
    let week_us = 7 * 86_400_000_000_i64;
    let start = 1_790_035_200_000_000_i64; // a UTC midnight
    let step = week_us / records as i64;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(DEFAULT_BATCH_SIZE);
    for n in 0..records {
        let (project_id, keys) = &projects[n % PROJECTS];
        batch.push(UsageRecord {
            request_id: new_id(),
            started_at_us: start + n as i64 * step,
            project_id: project_id.clone(),
            virtual_key_id: keys[(n / PROJECTS) % KEYS_PER_PROJECT].clone(),
            model: MODELS[n % MODELS.len()].to_owned(),
            provider_id: provider_id.clone(),
            input_tokens: 200 + (n % 50) as i64,
            output_tokens: 80,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            cost_micros: 40 + (n % 13) as i64,
            latency_ms: 300,
            http_status: if n % 50 == 0 { 429 } else { 200 },
            source: if n % 9 == 0 {
                UsageSource::Estimated
            } else {
                UsageSource::ProviderReported
            },
            // One request in a hundred belongs to one of a hundred agent runs.
            run_id: if n % 100 == 0 {
                format!("run-{}", n / 100 % 100)
            } else {
                String::new()
            },
            task_id: String::new(),
            tags: Vec::new(),
            lease_epoch: 0,
            attempts: 0,
        });
        if batch.len() == DEFAULT_BATCH_SIZE || n + 1 == records {
            store
                .commit_usage_batch(
                    &new_id(),
                    "bench-proxy",
                    "hash",
                    Delivery::First,
                    NewUsageBatch::from_records(std::mem::take(&mut batch)),
                )
                .await
                .unwrap();
        }
    }
    println!(
        "{backend}: {records} records over 7 days stored in {:.1} s; spend queries (best of 5):",
        started.elapsed().as_secs_f64()
    );
    // Ranges as an operator gives them: from a moment, not an hour boundary.
    let from_us = start + 13 * 60_000_000;
    let to_us = start + week_us - 7 * 60_000_000;
    let query = |group_by: Vec<UsageGroup>| UsageQuery {
        organization: "bench".into(),
        from_us,
        to_us,
        group_by,
        limit: 100,
        ..Default::default()
    };
    let cases = [
        ("week by project", query(vec![UsageGroup::Project])),
        (
            "week by day and model",
            query(vec![UsageGroup::Day, UsageGroup::Model]),
        ),
        (
            "week of one project by key",
            UsageQuery {
                project: Some("app-1".into()),
                ..query(vec![UsageGroup::VirtualKey])
            },
        ),
        (
            "week of one model by provider and source",
            UsageQuery {
                model: Some("gpt-4o".into()),
                ..query(vec![UsageGroup::Provider, UsageGroup::Source])
            },
        ),
        ("week by run", query(vec![UsageGroup::Run])),
        (
            "one run",
            UsageQuery {
                run_id: Some("run-7".into()),
                ..query(vec![UsageGroup::Model])
            },
        ),
    ];
    for (name, case) in cases {
        let mut best = Duration::MAX;
        let mut requests = 0;
        for _ in 0..5 {
            let started = Instant::now();
            let (_, total) = store.query_usage(case.clone()).await.unwrap();
            best = best.min(started.elapsed());
            requests = total.requests;
        }
        println!(
            "  {name}: {:.1} ms ({requests} requests summed)",
            best.as_secs_f64() * 1e3
        );
    }
}

fn report(backend: &str, measured: Measured) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / measured.records as f64;
    println!(
        "{backend}: {} records in batches of {}: {:.2} µs CPU and {:.2} µs wall per record",
        measured.records,
        batch_size(),
        per(measured.cpu),
        per(measured.wall)
    );
}

fn batch_size() -> usize {
    std::env::var("BENCH_BATCH_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_BATCH_SIZE)
}

fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF cannot fail.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// User + system time of every `postgres` process on this machine (the backends, the WAL
/// writer, the checkpointer): nothing else uses the server while the benchmark runs.
fn postgres_server_cpu() -> Duration {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let mut ticks = 0_u64;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = entry.path();
        let is_postgres =
            std::fs::read_to_string(path.join("comm")).is_ok_and(|comm| comm.trim() == "postgres");
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        if !is_postgres {
            continue;
        }
        // Fields after the parenthesised command: state is the 3rd, utime the 14th, stime the 15th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        ticks += fields
            .get(11)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_second)
}
