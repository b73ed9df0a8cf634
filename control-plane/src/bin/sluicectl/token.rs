//! `sluicectl token`: admin and data-plane tokens, shown once.

use crate::*;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ScopeArg {
    Admin,
    ReadOnly,
    DataPlane,
    /// Every RPC on one organisation's resources (with --org).
    OrgAdmin,
    /// The reads of org-admin (with --org).
    OrgReadOnly,
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token; it is printed once and never again.
    Create {
        name: String,
        #[arg(long, value_enum)]
        scope: ScopeArg,
        /// The organisation an org-admin or org-read-only token is limited to.
        #[arg(long)]
        org: Option<String>,
    },
    List,
    Revoke {
        name: String,
    },
}

pub(crate) const TOKEN_COLUMNS: &[&str] = &[
    "name",
    "scope",
    "organization",
    "prefix",
    "created_at",
    "revoked_at",
];

pub(crate) fn token_row(t: pb::AdminToken) -> Vec<Value> {
    let scope = pb::TokenScope::try_from(t.scope)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    vec![
        json!(t.name),
        json!(scope.trim_start_matches("TOKEN_SCOPE_")),
        json!(t.organization),
        json!(t.prefix),
        time(t.created_at_us),
        time(t.revoked_at_us),
    ]
}

pub(crate) async fn token(
    client: &mut Client,
    command: TokenCommand,
    format: Format,
) -> anyhow::Result<String> {
    let listing = match command {
        TokenCommand::Create { name, scope, org } => {
            let scope = match scope {
                ScopeArg::Admin => pb::TokenScope::Admin,
                ScopeArg::ReadOnly => pb::TokenScope::ReadOnly,
                ScopeArg::DataPlane => pb::TokenScope::DataPlane,
                ScopeArg::OrgAdmin => pb::TokenScope::OrgAdmin,
                ScopeArg::OrgReadOnly => pb::TokenScope::OrgReadOnly,
            } as i32;
            let response = client
                .create_admin_token(pb::CreateAdminTokenRequest {
                    name,
                    scope,
                    organization: org.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let token = SecretString::new(response.token.clone());
            return Ok(shown_once(
                "token",
                &token,
                TOKEN_COLUMNS,
                token_row(required(response.admin_token)?),
                format,
            ));
        }
        TokenCommand::List => {
            let response = client
                .list_admin_tokens(pb::ListAdminTokensRequest {})
                .await?;
            Listing::many(
                TOKEN_COLUMNS,
                response
                    .into_inner()
                    .admin_tokens
                    .into_iter()
                    .map(token_row)
                    .collect(),
            )
        }
        TokenCommand::Revoke { name } => {
            let response = client
                .revoke_admin_token(pb::RevokeAdminTokenRequest { name })
                .await?;
            Listing::one(
                TOKEN_COLUMNS,
                token_row(required(response.into_inner().admin_token)?),
            )
        }
    };
    Ok(listing.render(format))
}
