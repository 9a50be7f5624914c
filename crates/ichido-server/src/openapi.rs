//! The OpenAPI 3 document, generated from the handlers' annotations. A copy is
//! committed as `docs/openapi.json`; a test fails when the two drift apart.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{customer, import, operator, service, session, views};
use crate::error::{ErrorBody, ErrorDetail};

#[derive(OpenApi)]
#[openapi(
    info(title = "ichido", description = "One-time-password validation center for internet banking. Errors answer `{\"error\":{\"code\",\"message\"}}` with the codes of the contract."),
    paths(
        operator::create_contract, operator::create_user, operator::get_user, operator::unlock_user,
        operator::suspend, operator::resume, operator::unlock_token, operator::revoke, operator::audit,
        operator::validate, import::import,
        customer::register, customer::activate, customer::resync,
        session::login, session::logout, session::create_transaction, session::list_transactions,
        session::get_transaction, session::approve,
        service::healthz, service::metrics, service::openapi,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, views::NewContract, views::ContractView, views::NewUserBody, views::TokenView,
        views::UserResponse, views::SuspendBody, views::ValidateBody, views::ValidateResponse,
        views::AuditEventView, views::AuditResponse, views::RegistrationBody, views::RegistrationResponse,
        views::OtpBody, views::StateResponse, views::ResyncBody, service::Health,
        views::LoginBody, views::LoginResponse, views::LogoutResponse, views::TransactionBody,
        views::TransactionView, views::TransactionList, views::ApproveBody,
        import::ImportBody, import::ImportEntryBody, import::ImportTokenBody, import::ImportResponse,
        import::ImportedView,
    )),
    modifiers(&Security),
    tags(
        (name = "operator", description = "Bank operators: contracts, users and the token forms"),
        (name = "validation", description = "Relying parties: is this code right for this token?"),
        (name = "customer", description = "Customers: registration, activation, resync"),
        (name = "service", description = "Health, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = doc.components.as_mut() {
            c.add_security_scheme(
                "operator_key",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("Operator API key from `ichido operator create`"))
                        .build(),
                ),
            );
        }
    }
}

/// The document as pretty JSON, as committed in `docs/openapi.json`.
pub fn json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}
