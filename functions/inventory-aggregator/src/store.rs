//! S3: whole-object writes (PutObject is atomic per object: complete or absent), reads, listing.

use aws_sdk_s3::primitives::ByteStream;

use crate::error::{InventoryError, aws};

pub struct Store {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

impl Store {
    pub fn new(s3: aws_sdk_s3::Client, bucket: String) -> Self {
        Self { s3, bucket }
    }

    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), InventoryError> {
        self.put_as(key, body, "application/x-ndjson").await
    }

    pub async fn put_as(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), InventoryError> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| aws("PutObject", e))?;
        Ok(())
    }

    /// The object's bytes, `None` when absent.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, InventoryError> {
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(resp) => {
                let data =
                    resp.body
                        .collect()
                        .await
                        .map_err(|e| InventoryError::CorruptObject {
                            key: key.to_owned(),
                            reason: e.to_string(),
                        })?;
                Ok(Some(data.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(aws("GetObject", e)),
        }
    }

    /// Every key under `prefix`, in S3's (lexicographic) order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, InventoryError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| aws("ListObjectsV2", e))?;
            keys.extend(
                resp.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            token = resp.next_continuation_token().map(str::to_owned);
            if token.is_none() || resp.is_truncated() != Some(true) {
                break;
            }
        }
        Ok(keys)
    }
}
