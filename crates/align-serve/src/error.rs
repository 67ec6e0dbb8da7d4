use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered as `{"error": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}

impl From<align_search::Error> for ApiError {
    fn from(e: align_search::Error) -> Self {
        match e {
            align_search::Error::Query(m) => Self::bad_request(m),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<crate::EncodeError> for ApiError {
    fn from(e: crate::EncodeError) -> Self {
        match e {
            crate::EncodeError::BadInput(m) => Self::bad_request(m),
            crate::EncodeError::Model(m) => Self::internal(m),
        }
    }
}
