//! The original image of an item, for viewing beside its overlay.

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{extract::ItemPath, find_item};
use crate::{
    api::ErrorBody,
    artefacts::{self, ArtefactError},
    auth::Caller,
    error::ApiResult,
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_image))
}

/// The image as an 8-bit PNG of its stored pixel plane.
///
/// DICOM included: the plane holds the windowed pixels and nothing of the file's metadata.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}/items/{item}/image.png",
    tag = "results",
    operation_id = "get_image",
    params(("id" = Uuid, Path, description = "batch id"), ("item" = Uuid, Path, description = "item id")),
    responses(
        (status = 200, content_type = "image/png", body = Vec<u8>),
        (status = 404, body = ErrorBody, description = "`batch_not_found`, `not_found`: no such item, or it has no stored image"),
    )
)]
async fn get_image(
    State(state): State<AppState>,
    caller: Caller,
    ItemPath(batch, item): ItemPath,
) -> ApiResult<Response> {
    let record = find_item(&state, &caller, batch, item).await?;
    let key = record
        .blob_key
        .ok_or_else(|| ArtefactError::Missing(format!("item {item} has no stored image")))?;
    let png = artefacts::original_png(&state.blobs, &key).await?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}
