//! Every admin RPC, enumerated from the service descriptor (not a hand list), refuses a
//! missing or wrong token with UNAUTHENTICATED, a data-plane token always and a read-only
//! token on writes with PERMISSION_DENIED, and lets the right scopes through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use prost::Message;
use sluice_e2e::ControlPlaneBuilder;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

const SERVICE: &str = "sluice.admin.v1.AdminService";

fn admin_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(sluice_proto::FILE_DESCRIPTOR_SET).unwrap();
    let methods: Vec<String> = set
        .file
        .iter()
        .filter(|file| file.package() == "sluice.admin.v1")
        .flat_map(|file| file.service.iter())
        .filter(|service| service.name() == "AdminService")
        .flat_map(|service| service.method.iter().map(|m| m.name().to_owned()))
        .collect();
    assert!(
        methods.len() >= 38,
        "expected the whole admin surface, got {methods:?}"
    );
    methods
}

/// Calls `method` with an empty request: enough to see what the auth layer decides.
async fn call(channel: &Channel, method: &str, token: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let path = PathAndQuery::try_from(format!("/{SERVICE}/{method}")).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(request, path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// What the auth layer should decide; `Passes` means the call reached the handler (which may
/// still refuse the empty request as invalid, but never as an auth failure or a crash).
#[derive(Debug, Clone, Copy)]
enum Expect {
    Unauthenticated,
    Denied,
    Passes,
}

impl Expect {
    fn accepts(self, code: Code) -> bool {
        match self {
            Expect::Unauthenticated => code == Code::Unauthenticated,
            Expect::Denied => code == Code::PermissionDenied,
            Expect::Passes => !matches!(
                code,
                Code::Unauthenticated | Code::PermissionDenied | Code::Internal
            ),
        }
    }
}

fn is_read(method: &str) -> bool {
    method.starts_with("Get") || method.starts_with("List") || method.starts_with("Query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_rpc_checks_token_and_scope() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    let read_only = cp
        .ctl(&[
            "-o",
            "json",
            "token",
            "create",
            "viewer",
            "--scope",
            "read-only",
        ])
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let data_plane = cp.data_plane_token("proxy");
    let revoked = cp
        .ctl(&["-o", "json", "token", "create", "gone", "--scope", "admin"])
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    cp.ctl(&["token", "revoke", "gone"]).ok();

    let channel = Channel::from_shared(cp.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut failures = Vec::new();
    for method in admin_methods() {
        let read_only_expect = if is_read(&method) {
            Expect::Passes
        } else {
            Expect::Denied
        };
        let cases = [
            ("no token", None, Expect::Unauthenticated),
            (
                "wrong token",
                Some("sluice-admin-not-a-real-token-0000000000"),
                Expect::Unauthenticated,
            ),
            (
                "revoked token",
                Some(revoked.as_str()),
                Expect::Unauthenticated,
            ),
            (
                "data-plane token",
                Some(data_plane.as_str()),
                Expect::Denied,
            ),
            (
                "read-only token",
                Some(read_only.as_str()),
                read_only_expect,
            ),
            ("admin token", Some(cp.admin_token.as_str()), Expect::Passes),
        ];
        for (who, token, expect) in cases {
            let code = call(&channel, &method, token).await;
            if !expect.accepts(code) {
                failures.push(format!(
                    "{method} with {who}: got {code:?}, expected {expect:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
