//! Who may read presence (viewers of a resource, user status) under
//! `PRESENCE_VISIBILITY`: one policy for every route and stream that reads it.

use crate::auth::Caller;
use crate::config::Visibility;
use crate::domain::ResourceId;
use crate::http::error::ApiError;

/// Whether `caller` may read presence under `visibility`: the viewers of
/// `resource`, or (with `None`) user status.
///
/// # Errors
/// 403 `forbidden`, saying which rule refused.
pub(crate) fn may_read(
    visibility: Visibility,
    caller: &Caller,
    resource: Option<&ResourceId>,
) -> Result<(), ApiError> {
    if caller.admin {
        return Ok(());
    }
    match (visibility, resource) {
        (Visibility::Users, _) | (Visibility::Scoped, None) => Ok(()),
        (Visibility::Admins, _) => Err(ApiError::NotVisible(
            "presence is visible to admins only here (PRESENCE_VISIBILITY=admins)",
        )),
        (Visibility::Scoped, Some(resource)) if caller.scope.allows(resource) => Ok(()),
        (Visibility::Scoped, Some(_)) => Err(ApiError::NotVisible(
            "this resource is outside the token's presence scope",
        )),
    }
}
