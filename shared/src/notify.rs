//! SNS notifications for opened items and incidents: SNS's subject rules, then one Publish.

use crate::error::AwsCallError;

/// SNS subjects: ASCII without control characters, at most 100 characters; anything else
/// becomes `?` rather than failing the Publish.
pub fn sns_subject(subject: &str) -> String {
    subject
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Publishes `message` (JSON) to `topic` with a subject SNS accepts.
pub async fn publish(
    sns: &aws_sdk_sns::Client,
    topic: &str,
    subject: &str,
    message: &serde_json::Value,
) -> Result<(), AwsCallError> {
    sns.publish()
        .topic_arn(topic)
        .subject(sns_subject(subject))
        .message(message.to_string())
        .send()
        .await
        .map_err(|e| AwsCallError::from_sdk("Publish", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_ascii_printable_and_bounded() {
        assert_eq!(sns_subject("ok: i-1 is down"), "ok: i-1 is down");
        assert_eq!(sns_subject("caf\u{e9}\nline"), "caf??line");
        let long = "x".repeat(150);
        assert_eq!(sns_subject(&long).len(), 100);
        assert_eq!(sns_subject(&"\u{e9}".repeat(150)), "?".repeat(100));
    }
}
