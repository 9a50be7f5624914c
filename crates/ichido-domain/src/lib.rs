//! ichido's domain: the rules of the validation center, independent of HTTP and SQL.
//!
//! Invariant of the whole crate: an accepted code is never accepted again. The
//! store decides acceptance with one conditional write (see [`store::TokenStore::accept`]);
//! this crate never reads a counter and then writes it back unconditionally.

mod admission;
pub mod audit;
pub mod clock;
pub mod error;
pub mod ids;
pub mod keycache;
pub mod model;
pub mod password;
pub mod policy;
pub mod seal;
pub mod services;
pub mod store;
pub mod tokencache;

pub use clock::{Clock, FixedClock, SystemClock};
pub use error::DomainError;
pub use policy::Policy;
pub use services::Ichido;
