//! Tokens limited to one organisation (issue 16): every admin RPC called by a global admin, a
//! global read-only token, and an org-admin and an org-read-only token of the organisation it
//! targets and of another one. Each gets exactly its allowed outcome: refused writes and
//! global RPCs answer PERMISSION_DENIED, another organisation's resources answer NOT_FOUND as a
//! missing organisation would, and lists never carry another organisation's rows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use prost::Message;
use sluice_e2e::ControlPlaneBuilder;
use sluice_proto::admin::v1 as pb;
use sluice_proto::admin::v1::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    GlobalRead,
    GlobalWrite,
    OrgRead,
    OrgWrite,
    /// Read by every admin token, narrowed to an organisation for its tokens.
    Narrowed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Principal {
    Admin,
    ReadOnly,
    OrgAdminOwn,
    OrgReadOnlyOwn,
    OrgAdminOther,
    OrgReadOnlyOther,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Past every access check (whatever the handler then said).
    Served,
    Denied,
    /// As if the organisation did not exist.
    Hidden,
}

fn expected(principal: Principal, kind: Kind) -> Outcome {
    use Kind::*;
    use Principal::*;
    match (principal, kind) {
        (Admin, _) => Outcome::Served,
        (ReadOnly, GlobalRead | OrgRead | Narrowed) => Outcome::Served,
        (ReadOnly, _) => Outcome::Denied,
        (_, GlobalRead | GlobalWrite) => Outcome::Denied,
        (_, Narrowed) => Outcome::Served,
        (OrgAdminOwn, OrgRead | OrgWrite) | (OrgReadOnlyOwn, OrgRead) => Outcome::Served,
        (OrgReadOnlyOwn | OrgReadOnlyOther, OrgWrite) => Outcome::Denied,
        (OrgAdminOther, OrgRead | OrgWrite) | (OrgReadOnlyOther, OrgRead) => Outcome::Hidden,
    }
}

/// Every admin RPC, what it reaches, and a request aimed at organisation `acme` that changes
/// nothing whoever sends it (invalid or missing names, dry runs).
const RPCS: &[(&str, Kind)] = &[
    ("CreateOrganization", Kind::GlobalWrite),
    ("GetOrganization", Kind::GlobalRead),
    ("ListOrganizations", Kind::GlobalRead),
    ("UpdateOrganization", Kind::GlobalWrite),
    ("DeleteOrganization", Kind::GlobalWrite),
    ("CreateProject", Kind::OrgWrite),
    ("GetProject", Kind::OrgRead),
    ("ListProjects", Kind::OrgRead),
    ("UpdateProject", Kind::OrgWrite),
    ("DeleteProject", Kind::OrgWrite),
    ("SetProjectPosture", Kind::OrgWrite),
    ("GetProjectReadiness", Kind::OrgRead),
    ("CreateProvider", Kind::OrgWrite),
    ("GetProvider", Kind::OrgRead),
    ("ListProviders", Kind::OrgRead),
    ("UpdateProvider", Kind::OrgWrite),
    ("DeleteProvider", Kind::OrgWrite),
    ("CreateProviderKey", Kind::OrgWrite),
    ("GetProviderKey", Kind::OrgRead),
    ("ListProviderKeys", Kind::OrgRead),
    ("RotateProviderKey", Kind::OrgWrite),
    ("RevokeProviderKey", Kind::OrgWrite),
    ("DeleteProviderKey", Kind::OrgWrite),
    ("TestProviderKey", Kind::OrgWrite),
    ("CreateModel", Kind::OrgWrite),
    ("GetModel", Kind::OrgRead),
    ("ListModels", Kind::OrgRead),
    ("UpdateModel", Kind::OrgWrite),
    ("DeleteModel", Kind::OrgWrite),
    ("SyncModelPricing", Kind::OrgWrite),
    ("CreateBudget", Kind::OrgWrite),
    ("ListBudgets", Kind::OrgRead),
    ("UpdateBudget", Kind::OrgWrite),
    ("DeleteBudget", Kind::OrgWrite),
    ("CreateRateLimit", Kind::OrgWrite),
    ("ListRateLimits", Kind::OrgRead),
    ("UpdateRateLimit", Kind::OrgWrite),
    ("DeleteRateLimit", Kind::OrgWrite),
    ("QueryUsage", Kind::OrgRead),
    ("ListRunCalls", Kind::OrgRead),
    ("CreateVirtualKey", Kind::OrgWrite),
    ("GetVirtualKey", Kind::OrgRead),
    ("ListVirtualKeys", Kind::OrgRead),
    ("UpdateVirtualKey", Kind::OrgWrite),
    ("RevokeVirtualKey", Kind::OrgWrite),
    ("DeleteVirtualKey", Kind::OrgWrite),
    ("CreateAdminToken", Kind::GlobalWrite),
    ("ListAdminTokens", Kind::GlobalRead),
    ("RevokeAdminToken", Kind::GlobalWrite),
    ("GetCaller", Kind::Narrowed),
    ("ListAuditEvents", Kind::Narrowed),
    ("ListProxies", Kind::GlobalRead),
    ("GetVaultStatus", Kind::GlobalRead),
    ("RewrapProviderKeys", Kind::GlobalWrite),
];

const ORG: &str = "acme";

fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Calls `rpc` as `token`; `Ok` carries the response, encoded, for the list checks.
async fn invoke(
    client: &mut AdminServiceClient<Channel>,
    rpc: &str,
    token: &str,
    org: &str,
) -> Result<Vec<u8>, Status> {
    macro_rules! call {
        ($method:ident, $message:expr) => {
            client
                .$method(authorized($message, token))
                .await
                .map(|response| response.into_inner().encode_to_vec())
        };
    }
    let org = org.to_owned();
    let missing = "missing".to_owned();
    let bad = "Not A Name!".to_owned();
    let budget_target = || {
        Some(pb::BudgetTarget {
            organization: org.clone(),
            project: missing.clone(),
            ..Default::default()
        })
    };
    let rate_target = || {
        Some(pb::RateLimitTarget {
            organization: org.clone(),
            project: missing.clone(),
            ..Default::default()
        })
    };
    match rpc {
        "CreateOrganization" => call!(
            create_organization,
            pb::CreateOrganizationRequest {
                name: bad,
                ..Default::default()
            }
        ),
        "GetOrganization" => call!(get_organization, pb::GetOrganizationRequest { name: org }),
        "ListOrganizations" => call!(list_organizations, pb::ListOrganizationsRequest::default()),
        "UpdateOrganization" => call!(
            update_organization,
            pb::UpdateOrganizationRequest {
                name: missing,
                ..Default::default()
            }
        ),
        "DeleteOrganization" => call!(
            delete_organization,
            pb::DeleteOrganizationRequest { name: missing }
        ),
        "CreateProject" => call!(
            create_project,
            pb::CreateProjectRequest {
                organization: org,
                name: bad,
                ..Default::default()
            }
        ),
        "GetProject" => call!(
            get_project,
            pb::GetProjectRequest {
                organization: org,
                name: "web".into()
            }
        ),
        "ListProjects" => call!(list_projects, pb::ListProjectsRequest { organization: org }),
        "UpdateProject" => call!(
            update_project,
            pb::UpdateProjectRequest {
                organization: org,
                name: missing,
                ..Default::default()
            }
        ),
        "DeleteProject" => call!(
            delete_project,
            pb::DeleteProjectRequest {
                organization: org,
                name: missing
            }
        ),
        "SetProjectPosture" => call!(
            set_project_posture,
            pb::SetProjectPostureRequest {
                organization: org,
                name: missing,
                posture: 1
            }
        ),
        "GetProjectReadiness" => call!(
            get_project_readiness,
            pb::GetProjectReadinessRequest {
                organization: org,
                name: "web".into()
            }
        ),
        "CreateProvider" => call!(
            create_provider,
            pb::CreateProviderRequest {
                organization: org,
                name: bad,
                ..Default::default()
            }
        ),
        "GetProvider" => call!(
            get_provider,
            pb::GetProviderRequest {
                organization: org,
                name: "openai".into()
            }
        ),
        "ListProviders" => call!(
            list_providers,
            pb::ListProvidersRequest { organization: org }
        ),
        "UpdateProvider" => call!(
            update_provider,
            pb::UpdateProviderRequest {
                organization: org,
                name: missing,
                ..Default::default()
            }
        ),
        "DeleteProvider" => call!(
            delete_provider,
            pb::DeleteProviderRequest {
                organization: org,
                name: missing
            }
        ),
        "CreateProviderKey" => call!(
            create_provider_key,
            pb::CreateProviderKeyRequest {
                organization: org,
                provider: "openai".into(),
                name: bad,
                ..Default::default()
            }
        ),
        "GetProviderKey" => call!(
            get_provider_key,
            pb::GetProviderKeyRequest {
                organization: org,
                provider: "openai".into(),
                name: missing
            }
        ),
        "ListProviderKeys" => call!(
            list_provider_keys,
            pb::ListProviderKeysRequest {
                organization: org,
                provider: "openai".into()
            }
        ),
        "RotateProviderKey" => call!(
            rotate_provider_key,
            pb::RotateProviderKeyRequest {
                organization: org,
                provider: "openai".into(),
                name: missing,
                ..Default::default()
            }
        ),
        "RevokeProviderKey" => call!(
            revoke_provider_key,
            pb::RevokeProviderKeyRequest {
                organization: org,
                provider: "openai".into(),
                name: missing,
                ..Default::default()
            }
        ),
        "DeleteProviderKey" => call!(
            delete_provider_key,
            pb::DeleteProviderKeyRequest {
                organization: org,
                provider: "openai".into(),
                name: missing,
                ..Default::default()
            }
        ),
        "TestProviderKey" => call!(
            test_provider_key,
            pb::TestProviderKeyRequest {
                organization: org,
                provider: "openai".into(),
                name: missing,
                ..Default::default()
            }
        ),
        "CreateModel" => call!(
            create_model,
            pb::CreateModelRequest {
                organization: org,
                name: bad,
                ..Default::default()
            }
        ),
        "GetModel" => call!(
            get_model,
            pb::GetModelRequest {
                organization: org,
                name: "gpt-4o-mini".into()
            }
        ),
        "ListModels" => call!(list_models, pb::ListModelsRequest { organization: org }),
        "UpdateModel" => call!(
            update_model,
            pb::UpdateModelRequest {
                organization: org,
                name: missing,
                ..Default::default()
            }
        ),
        "DeleteModel" => call!(
            delete_model,
            pb::DeleteModelRequest {
                organization: org,
                name: missing
            }
        ),
        "SyncModelPricing" => call!(
            sync_model_pricing,
            pb::SyncModelPricingRequest {
                organization: org,
                dry_run: true,
                ..Default::default()
            }
        ),
        "CreateBudget" => call!(
            create_budget,
            pb::CreateBudgetRequest {
                target: budget_target(),
                ..Default::default()
            }
        ),
        "ListBudgets" => call!(list_budgets, pb::ListBudgetsRequest { organization: org }),
        "UpdateBudget" => call!(
            update_budget,
            pb::UpdateBudgetRequest {
                target: budget_target(),
                ..Default::default()
            }
        ),
        "DeleteBudget" => call!(
            delete_budget,
            pb::DeleteBudgetRequest {
                target: budget_target(),
                ..Default::default()
            }
        ),
        "CreateRateLimit" => call!(
            create_rate_limit,
            pb::CreateRateLimitRequest {
                target: rate_target(),
                ..Default::default()
            }
        ),
        "ListRateLimits" => call!(
            list_rate_limits,
            pb::ListRateLimitsRequest { organization: org }
        ),
        "UpdateRateLimit" => call!(
            update_rate_limit,
            pb::UpdateRateLimitRequest {
                target: rate_target(),
                ..Default::default()
            }
        ),
        "DeleteRateLimit" => call!(
            delete_rate_limit,
            pb::DeleteRateLimitRequest {
                target: rate_target()
            }
        ),
        "QueryUsage" => call!(
            query_usage,
            pb::QueryUsageRequest {
                organization: org,
                ..Default::default()
            }
        ),
        "CreateVirtualKey" => call!(
            create_virtual_key,
            pb::CreateVirtualKeyRequest {
                organization: org,
                project: "web".into(),
                name: bad,
                ..Default::default()
            }
        ),
        "GetVirtualKey" => call!(
            get_virtual_key,
            pb::GetVirtualKeyRequest {
                organization: org,
                project: "web".into(),
                name: missing
            }
        ),
        "ListVirtualKeys" => call!(
            list_virtual_keys,
            pb::ListVirtualKeysRequest {
                organization: org,
                project: "web".into(),
                ..Default::default()
            }
        ),
        "UpdateVirtualKey" => call!(
            update_virtual_key,
            pb::UpdateVirtualKeyRequest {
                organization: org,
                project: "web".into(),
                name: missing,
                ..Default::default()
            }
        ),
        "RevokeVirtualKey" => call!(
            revoke_virtual_key,
            pb::RevokeVirtualKeyRequest {
                organization: org,
                project: "web".into(),
                name: missing
            }
        ),
        "DeleteVirtualKey" => call!(
            delete_virtual_key,
            pb::DeleteVirtualKeyRequest {
                organization: org,
                project: "web".into(),
                name: missing
            }
        ),
        "CreateAdminToken" => call!(
            create_admin_token,
            pb::CreateAdminTokenRequest {
                name: bad,
                scope: 1,
                ..Default::default()
            }
        ),
        "ListAdminTokens" => call!(list_admin_tokens, pb::ListAdminTokensRequest {}),
        "RevokeAdminToken" => call!(
            revoke_admin_token,
            pb::RevokeAdminTokenRequest { name: missing }
        ),
        "GetCaller" => call!(get_caller, pb::GetCallerRequest {}),
        "ListRunCalls" => call!(
            list_run_calls,
            pb::ListRunCallsRequest {
                organization: org,
                run_id: "none".into(),
                limit: 0
            }
        ),
        "ListAuditEvents" => call!(
            list_audit_events,
            pb::ListAuditEventsRequest {
                limit: 1000,
                ..Default::default()
            }
        ),
        "ListProxies" => call!(list_proxies, pb::ListProxiesRequest {}),
        "GetVaultStatus" => call!(get_vault_status, pb::GetVaultStatusRequest {}),
        "RewrapProviderKeys" => call!(rewrap_provider_keys, pb::RewrapProviderKeysRequest {}),
        other => panic!("no request for {other}"),
    }
}

fn outcome(result: &Result<Vec<u8>, Status>, org: &str) -> Outcome {
    match result {
        Ok(_) => Outcome::Served,
        Err(status) if status.code() == Code::PermissionDenied => Outcome::Denied,
        Err(status)
            if status.code() == Code::NotFound
                && status.message() == format!("organization '{org}' not found") =>
        {
            Outcome::Hidden
        }
        Err(status) => {
            assert_ne!(status.code(), Code::Unauthenticated, "{status:?}");
            Outcome::Served
        }
    }
}

/// The admin service's methods, from the descriptor the server registers for reflection.
fn service_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(sluice_proto::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .iter()
        .flat_map(|file| &file.service)
        .filter(|service| service.name() == "AdminService")
        .flat_map(|service| &service.method)
        .map(|method| method.name().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_rpc_answers_each_scope_and_organisation_as_allowed() {
    let mut listed: Vec<String> = RPCS.iter().map(|(name, _)| name.to_string()).collect();
    let mut methods = service_methods();
    listed.sort();
    methods.sort();
    assert_eq!(listed, methods, "the table must name every admin RPC");

    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(dir.path()).start();
    cp.seed_acme("http://127.0.0.1:9/v1", Some("sk-tenancy"), &[]);
    cp.ctl(&["org", "create", "globex"]).ok();
    cp.ctl(&["project", "create", "globex/secret-plans"]).ok();
    let token = |name: &str, scope: &str, org: Option<&str>| {
        let mut args = vec!["-o", "json", "token", "create", name, "--scope", scope];
        if let Some(org) = org {
            args.extend(["--org", org]);
        }
        cp.ctl(&args).json()["token"].as_str().unwrap().to_owned()
    };
    let tokens = [
        (Principal::Admin, cp.admin_token.clone()),
        (Principal::ReadOnly, token("reader", "read-only", None)),
        (
            Principal::OrgAdminOwn,
            token("acme-admin", "org-admin", Some("acme")),
        ),
        (
            Principal::OrgReadOnlyOwn,
            token("acme-reader", "org-read-only", Some("acme")),
        ),
        (
            Principal::OrgAdminOther,
            token("globex-admin", "org-admin", Some("globex")),
        ),
        (
            Principal::OrgReadOnlyOther,
            token("globex-reader", "org-read-only", Some("globex")),
        ),
    ];
    // An org token's own write is audited with its scope.
    let listed = cp.ctl_as(
        &tokens[2].1,
        &[
            "-o",
            "json",
            "project",
            "update",
            "acme/web",
            "--display-name",
            "Web",
        ],
        None,
    );
    listed.ok();

    let mut client = AdminServiceClient::connect(cp.url()).await.unwrap();
    let mut wrong = Vec::new();
    for (rpc, kind) in RPCS {
        for (principal, token) in &tokens {
            let result = invoke(&mut client, rpc, token, ORG).await;
            let want = expected(*principal, *kind);
            let got = outcome(&result, ORG);
            if got != want {
                wrong.push(format!(
                    "{rpc} as {principal:?}: want {want:?}, got {got:?} ({:?})",
                    result.err()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // No existence leak: another organisation's token gets the same answer for acme as for
    // an organisation that does not exist.
    for rpc in ["GetProject", "ListProjects", "DeleteModel", "QueryUsage"] {
        let real = invoke(&mut client, rpc, &tokens[4].1, "acme")
            .await
            .unwrap_err();
        let none = invoke(&mut client, rpc, &tokens[4].1, "nonesuch")
            .await
            .unwrap_err();
        assert_eq!(real.code(), Code::NotFound);
        assert_eq!(
            real.message().replace("acme", "X"),
            none.message().replace("nonesuch", "X"),
            "{rpc}"
        );
    }

    // Lists carry only the caller's organisation's rows.
    for (_, token) in &tokens[2..4] {
        let projects = pb::ListProjectsResponse::decode(
            invoke(&mut client, "ListProjects", token, "acme")
                .await
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        let names: Vec<&str> = projects.projects.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web"]);
        let audit = pb::ListAuditEventsResponse::decode(
            invoke(&mut client, "ListAuditEvents", token, "acme")
                .await
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        assert!(!audit.events.is_empty());
        for event in &audit.events {
            assert!(
                (event.target == "acme" || event.target.starts_with("acme/"))
                    && !event.action.starts_with("admin_token."),
                "{event:?}"
            );
        }
        assert!(
            audit
                .events
                .iter()
                .any(|e| e.action == "project.update" && e.actor == "acme-admin [org-admin:acme]")
        );
    }
    let everything = pb::ListAuditEventsResponse::decode(
        invoke(&mut client, "ListAuditEvents", &tokens[0].1, "acme")
            .await
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    assert!(
        everything
            .events
            .iter()
            .any(|e| e.target.starts_with("globex"))
    );
    assert!(
        everything
            .events
            .iter()
            .any(|e| e.action == "admin_token.create" && e.detail.contains("organization=globex"))
    );

    // A deleted organisation's tokens stop working.
    cp.ctl(&["project", "delete", "globex/secret-plans"]).ok();
    cp.ctl(&["org", "delete", "globex"]).ok();
    let gone = invoke(&mut client, "ListProjects", &tokens[4].1, "globex")
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::Unauthenticated, "{gone:?}");
}
