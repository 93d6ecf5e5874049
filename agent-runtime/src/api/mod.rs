//! HTTP handlers: the OpenAI-compatible API, the sessions API, tenant
//! administration, and the operational endpoints, with the API's own types
//! ([`dto`]). Each handler turns its wire format into a call of the
//! conversation service (or a storage read) and the result back.

pub mod admin;
pub mod admin_dto;
pub mod dto;
pub mod live;
pub mod openai;
pub mod openai_options;
pub mod ops;
pub mod sessions;
pub mod sse;

/// Deserializes an optional whole number that JSON may spell `5` or `5.0`.
pub(crate) fn whole_i64<'de, D>(deserializer: D) -> Result<Option<i64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize as _;
    use serde::de::Error as _;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = match (number.as_i64(), number.as_f64()) {
        (Some(n), _) => Some(n),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
        _ => None,
    };
    whole
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{number} is not a whole number")))
}

/// Deserializes an optional count that JSON may spell `5` or `5.0` (JSON
/// Schema's `integer`, which the OpenAPI document promises, admits both).
pub(crate) fn whole_u32<'de, D>(deserializer: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize as _;
    use serde::de::Error as _;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = match (number.as_u64(), number.as_f64()) {
        (Some(n), _) => u32::try_from(n).ok(),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => {
            Some(f as u32)
        }
        _ => None,
    };
    whole.map(Some).ok_or_else(|| {
        D::Error::custom(format!(
            "expected a whole number from 0 to {}, got {number}",
            u32::MAX
        ))
    })
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "super::whole_u32")]
        n: Option<u32>,
    }

    fn n(json: &str) -> Result<Option<u32>, serde_json::Error> {
        serde_json::from_str::<Body>(json).map(|b| b.n)
    }

    #[test]
    fn counts_may_be_spelled_as_whole_floats() {
        assert_eq!(n("{}").ok(), Some(None));
        assert_eq!(n(r#"{"n": null}"#).ok(), Some(None));
        assert_eq!(n(r#"{"n": 7}"#).ok(), Some(Some(7)));
        assert_eq!(n(r#"{"n": 7.0}"#).ok(), Some(Some(7)));
        assert!(n(r#"{"n": 7.5}"#).is_err());
        assert!(n(r#"{"n": -1}"#).is_err());
        assert!(n(r#"{"n": 4294967296}"#).is_err());
        assert!(n(r#"{"n": "7"}"#).is_err());
    }
}
