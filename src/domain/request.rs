//! The send request, parsed at the edge: after `SendRequest::parse` the rest
//! of the code only sees valid, normalised values.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::phone::Phone;
use super::ErrorCode;

pub const MAX_TEXT_CHARS: usize = 4096;
pub const MAX_CAPTION_CHARS: usize = 1024;
pub const MAX_FILE_NAME_CHARS: usize = 240;
pub const MAX_URL_BYTES: usize = 2048;

/// Why a request body was refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `invalid_request` or `invalid_phone_number`.
    pub code: ErrorCode,
    pub field: Option<String>,
    pub message: String,
}

impl FieldError {
    fn invalid(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            code: ErrorCode::InvalidRequest,
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    fn body(message: impl Into<String>) -> FieldError {
        FieldError {
            code: ErrorCode::InvalidRequest,
            field: None,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text {
        body: String,
    },
    Image {
        url: String,
        caption: Option<String>,
    },
    Document {
        url: String,
        file_name: Option<String>,
        mimetype: Option<String>,
        caption: Option<String>,
    },
}

impl Message {
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Text { .. } => "text",
            Message::Image { .. } => "image",
            Message::Document { .. } => "document",
        }
    }

    pub fn media_url(&self) -> Option<&str> {
        match self {
            Message::Text { .. } => None,
            Message::Image { url, .. } | Message::Document { url, .. } => Some(url),
        }
    }

    /// The stored payload: the page's field names, normalised.
    pub fn payload_json(&self) -> Value {
        match self {
            Message::Text { body } => json!({ "text": body }),
            Message::Image { url, caption } => json!({ "url": url, "caption": caption }),
            Message::Document {
                url,
                file_name,
                mimetype,
                caption,
            } => json!({
                "url": url, "fileName": file_name, "mimetype": mimetype, "caption": caption
            }),
        }
    }

    /// Inverse of [`Message::payload_json`], for attempts read back from the store.
    pub fn from_payload(type_name: &str, payload: &Value) -> Option<Message> {
        let s = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_string);
        match type_name {
            "text" => Some(Message::Text { body: s("text")? }),
            "image" => Some(Message::Image {
                url: s("url")?,
                caption: s("caption"),
            }),
            "document" => Some(Message::Document {
                url: s("url")?,
                file_name: s("fileName"),
                mimetype: s("mimetype"),
                caption: s("caption"),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    pub from: Option<Phone>,
    pub to: Phone,
    pub message: Message,
}

impl SendRequest {
    /// Parse a request body. Shape errors come before phone-number errors, as
    /// the contract orders its checks.
    pub fn parse(body: &[u8]) -> Result<SendRequest, FieldError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| FieldError::body(format!("request body is not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(FieldError::body("request body must be a JSON object"));
        };
        SendRequest::from_object(&obj)
    }

    /// [`SendRequest::parse`] of a body already parsed as a JSON object (the
    /// MCP tool's arguments): the same checks in the same order.
    pub fn from_object(obj: &Map<String, Value>) -> Result<SendRequest, FieldError> {
        let to_raw = required_string(obj, "to")?;
        let from_raw = optional_string(obj, "from")?;
        let type_name = required_string(obj, "type")?;
        let message = match type_name {
            "text" => {
                only_payload(obj, "text")?;
                let body = required_string(obj, "text")?;
                check_text("text", body, MAX_TEXT_CHARS)?;
                Message::Text {
                    body: body.to_string(),
                }
            }
            "image" => {
                only_payload(obj, "image")?;
                let image = required_object(obj, "image")?;
                Message::Image {
                    url: media_url(image, "image.url")?,
                    caption: caption(image, "image.caption")?,
                }
            }
            "document" => {
                only_payload(obj, "document")?;
                let doc = required_object(obj, "document")?;
                Message::Document {
                    url: media_url(doc, "document.url")?,
                    file_name: file_name(doc)?,
                    mimetype: mimetype(doc)?,
                    caption: caption(doc, "document.caption")?,
                }
            }
            other => {
                return Err(FieldError::invalid(
                    "type",
                    format!("type must be \"text\", \"image\" or \"document\", not {other:?}"),
                ))
            }
        };
        let to = Phone::parse(to_raw).map_err(|e| FieldError {
            code: ErrorCode::InvalidPhoneNumber,
            field: Some("to".into()),
            message: format!("to: {e}"),
        })?;
        let from = match from_raw {
            Some(raw) => Some(Phone::parse(raw).map_err(|e| FieldError {
                code: ErrorCode::InvalidPhoneNumber,
                field: Some("from".into()),
                message: format!("from: {e}"),
            })?),
            None => None,
        };
        Ok(SendRequest { from, to, message })
    }

    /// SHA-256 over the canonical form of the normalised request: two
    /// requests that mean the same send (`+91 7999-709798` and
    /// `+917999709798`) have the same fingerprint.
    pub fn fingerprint(&self) -> [u8; 32] {
        // serde_json's default map is ordered, so this serialisation is canonical.
        let canonical = json!({
            "from": self.from.as_ref().map(Phone::e164),
            "to": self.to.e164(),
            "type": self.message.type_name(),
            "payload": self.message.payload_json(),
        });
        Sha256::digest(canonical.to_string().as_bytes()).into()
    }
}

fn type_name_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn required_string<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(FieldError::invalid(field, format!("{field} is required"))),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(FieldError::invalid(
            field,
            format!("{field} must be a string, not {}", type_name_of(other)),
        )),
    }
}

fn optional_string<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(FieldError::invalid(
            field,
            format!("{field} must be a string, not {}", type_name_of(other)),
        )),
    }
}

fn required_object<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a Map<String, Value>, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(FieldError::invalid(
            field,
            format!("type is \"{field}\" but the {field} object is missing"),
        )),
        Some(Value::Object(o)) => Ok(o),
        Some(other) => Err(FieldError::invalid(
            field,
            format!("{field} must be an object, not {}", type_name_of(other)),
        )),
    }
}

/// A payload field other than the one `type` names must be absent or null.
fn only_payload(obj: &Map<String, Value>, wanted: &str) -> Result<(), FieldError> {
    for other in ["text", "image", "document"] {
        if other != wanted && obj.get(other).is_some_and(|v| !v.is_null()) {
            return Err(FieldError::invalid(
                other,
                format!("type is \"{wanted}\" but a {other} payload was given"),
            ));
        }
    }
    Ok(())
}

fn sub_string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a str>, FieldError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(FieldError::invalid(
            field,
            format!("{field} must be a string, not {}", type_name_of(other)),
        )),
    }
}

fn check_text(field: &str, s: &str, max_chars: usize) -> Result<(), FieldError> {
    if s.trim().is_empty() {
        return Err(FieldError::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    let n = s.chars().count();
    if n > max_chars {
        return Err(FieldError::invalid(
            field,
            format!("{field} is {n} characters; the limit is {max_chars}"),
        ));
    }
    Ok(())
}

fn media_url(obj: &Map<String, Value>, field: &str) -> Result<String, FieldError> {
    let url = sub_string(obj, "url", field)?
        .ok_or_else(|| FieldError::invalid(field, format!("{field} is required")))?;
    if url.is_empty() {
        return Err(FieldError::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if url.len() > MAX_URL_BYTES {
        return Err(FieldError::invalid(
            field,
            format!("{field} is longer than {MAX_URL_BYTES} bytes"),
        ));
    }
    Ok(url.to_string())
}

fn caption(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, FieldError> {
    match sub_string(obj, "caption", field)? {
        None => Ok(None),
        Some("") => Ok(None),
        Some(c) => {
            check_text(field, c, MAX_CAPTION_CHARS)?;
            Ok(Some(c.to_string()))
        }
    }
}

fn file_name(obj: &Map<String, Value>) -> Result<Option<String>, FieldError> {
    let field = "document.fileName";
    match sub_string(obj, "fileName", field)? {
        None => Ok(None),
        Some(name) => {
            if name.trim().is_empty() {
                return Err(FieldError::invalid(
                    field,
                    format!("{field} must not be empty"),
                ));
            }
            if name.chars().count() > MAX_FILE_NAME_CHARS {
                return Err(FieldError::invalid(
                    field,
                    format!("{field} is longer than {MAX_FILE_NAME_CHARS} characters"),
                ));
            }
            if name
                .chars()
                .any(|c| c.is_control() || c == '/' || c == '\\')
            {
                return Err(FieldError::invalid(
                    field,
                    format!("{field} must not contain control characters or path separators"),
                ));
            }
            Ok(Some(name.to_string()))
        }
    }
}

fn mimetype(obj: &Map<String, Value>) -> Result<Option<String>, FieldError> {
    let field = "document.mimetype";
    match sub_string(obj, "mimetype", field)? {
        None => Ok(None),
        Some(m) => {
            let token = |s: &str| {
                !s.is_empty()
                    && s.len() <= 127
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
            };
            match m.split_once('/') {
                Some((t, sub)) if token(t) && token(sub) => Ok(Some(m.to_ascii_lowercase())),
                _ => Err(FieldError::invalid(
                    field,
                    format!("{field} must be a MIME type like application/pdf, not {m:?}"),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SendRequest, FieldError> {
        SendRequest::parse(s.as_bytes())
    }

    fn field_of(s: &str) -> (String, Option<String>) {
        let e = parse(s).unwrap_err();
        (e.code.to_string(), e.field)
    }

    #[test]
    fn parses_the_pages_three_message_types() {
        let t = parse(r#"{"from":"+917000000001","to":"+917999709798","type":"text","text":"hi"}"#)
            .unwrap();
        assert_eq!(t.from.unwrap().e164(), "+917000000001");
        assert_eq!(t.message, Message::Text { body: "hi".into() });
        let i = parse(r#"{"to":"+917999709798","type":"image","image":{"url":"https://example.com/p.png","caption":"c"}}"#).unwrap();
        assert_eq!(i.message.media_url(), Some("https://example.com/p.png"));
        let d = parse(r#"{"to":"+917999709798","type":"document","document":{"url":"https://example.com/q.pdf","fileName":"quote.pdf","mimetype":"application/pdf","caption":"x"}}"#).unwrap();
        assert!(
            matches!(d.message, Message::Document { file_name: Some(ref f), .. } if f == "quote.pdf")
        );
    }

    #[test]
    fn shape_errors_name_the_field() {
        let cases = [
            ("not json", None),
            ("[1]", None),
            (r#"{"type":"text","text":"x"}"#, Some("to")),
            (r#"{"to":5,"type":"text","text":"x"}"#, Some("to")),
            (r#"{"to":"+917999709798","text":"x"}"#, Some("type")),
            (r#"{"to":"+917999709798","type":"video"}"#, Some("type")),
            (r#"{"to":"+917999709798","type":"text"}"#, Some("text")),
            (
                r#"{"to":"+917999709798","type":"text","text":"  "}"#,
                Some("text"),
            ),
            (
                r#"{"to":"+917999709798","type":"text","text":7}"#,
                Some("text"),
            ),
            (r#"{"to":"+917999709798","type":"image"}"#, Some("image")),
            (
                r#"{"to":"+917999709798","type":"image","image":{}}"#,
                Some("image.url"),
            ),
            (
                r#"{"to":"+917999709798","type":"image","image":"https://x"}"#,
                Some("image"),
            ),
            (
                r#"{"to":"+917999709798","type":"image","text":"x","image":{"url":"https://a.b/c"}}"#,
                Some("text"),
            ),
            (
                r#"{"to":"+917999709798","type":"document","document":{"url":"https://a.b/c","fileName":"../x"}}"#,
                Some("document.fileName"),
            ),
            (
                r#"{"to":"+917999709798","type":"document","document":{"url":"https://a.b/c","mimetype":"pdf"}}"#,
                Some("document.mimetype"),
            ),
            (
                r#"{"to":"+917999709798","from":1,"type":"text","text":"x"}"#,
                Some("from"),
            ),
        ];
        for (body, field) in cases {
            let (code, f) = field_of(body);
            assert_eq!(code, "invalid_request", "{body}");
            assert_eq!(f.as_deref(), field, "{body}");
        }
    }

    #[test]
    fn text_and_caption_limits_count_characters() {
        let ok = format!(
            r#"{{"to":"+917999709798","type":"text","text":"{}"}}"#,
            "é".repeat(4096)
        );
        assert!(parse(&ok).is_ok());
        let long = format!(
            r#"{{"to":"+917999709798","type":"text","text":"{}"}}"#,
            "a".repeat(4097)
        );
        assert_eq!(field_of(&long).1.as_deref(), Some("text"));
        let cap = format!(
            r#"{{"to":"+917999709798","type":"image","image":{{"url":"https://a.b/c","caption":"{}"}}}}"#,
            "a".repeat(1025)
        );
        assert_eq!(field_of(&cap).1.as_deref(), Some("image.caption"));
    }

    #[test]
    fn phone_errors_come_after_shape_errors() {
        let (code, field) = field_of(r#"{"to":"12","type":"text","text":"x"}"#);
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("invalid_phone_number", Some("to"))
        );
        let (code, _) = field_of(r#"{"to":"12","type":"text"}"#);
        assert_eq!(code, "invalid_request");
        let (code, field) =
            field_of(r#"{"from":"abc","to":"+917999709798","type":"text","text":"x"}"#);
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("invalid_phone_number", Some("from"))
        );
    }

    #[test]
    fn fingerprint_is_taken_after_normalisation() {
        let a = parse(r#"{"to":"+91 7999-709798","type":"text","text":"x","extra":1}"#).unwrap();
        let b = parse(r#"{"type":"text","text":"x","to":"+917999709798"}"#).unwrap();
        let c = parse(r#"{"to":"+917999709798","type":"text","text":"y"}"#).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn payload_round_trips() {
        let d = parse(r#"{"to":"+917999709798","type":"document","document":{"url":"https://a.b/c","fileName":"f.pdf"}}"#).unwrap();
        let back = Message::from_payload("document", &d.message.payload_json()).unwrap();
        assert_eq!(back, d.message);
    }
}
