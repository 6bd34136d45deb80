//! Extractors that answer in the API's own error shape: a malformed query is a `{code,
//! message}` with the parameter named, not axum's plain-text rejection, and an id that is not a
//! UUID is the resource's 404, exactly as an id that names nothing.

use axum::{
    extract::{FromRequestParts, Path, Query},
    http::request::Parts,
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{api::Bounded, error::ApiError};

/// Query parameters, parsed and checked against their documented bounds.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Bounded,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let refuse = |message: String| {
            if T::FILTER {
                ApiError::InvalidFilter(message)
            } else {
                ApiError::InvalidRequest(message)
            }
        };
        let Query(query) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| refuse(e.body_text()))?;
        query
            .check()
            .map_err(|(name, why)| refuse(format!("{name}: {why}")))?;
        Ok(Self(query))
    }
}

/// `/v1/batches/{id}/…`: the batch id.
pub struct BatchPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for BatchPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
        raw.parse()
            .map(Self)
            .map_err(|_| ApiError::BatchNotFound(raw))
    }
}

/// `/v1/batches/{id}/items/{item}/…`: the batch and item ids.
pub struct ItemPath(pub Uuid, pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for ItemPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((batch, item)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
        let batch = batch.parse().map_err(|_| ApiError::BatchNotFound(batch))?;
        let item = item
            .parse()
            .map_err(|_| ApiError::NotFound(format!("no item {item}")))?;
        Ok(Self(batch, item))
    }
}
