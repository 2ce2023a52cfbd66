//! Reading a stock handler's JSON args with errors that name the handler, the field, the
//! bad value and what would be valid — and that reject misspelt fields rather than
//! silently ignoring them.

use serde_json::{Map, Value};

use crate::error::HandlerError;

/// The args of `handler`, checked to be an object with only `allowed` fields.
pub(crate) struct Args<'a> {
    handler: &'static str,
    fields: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    pub(crate) fn new(
        handler: &'static str,
        args: &'a Value,
        allowed: &[&str],
        example: &str,
    ) -> Result<Self, HandlerError> {
        let Value::Object(fields) = args else {
            return Err(HandlerError::new(format!(
                "invalid args for the {handler} handler: expected a JSON object such as {example}, got {}",
                short(args)
            )));
        };
        if let Some(unknown) = fields.keys().find(|key| !allowed.contains(&key.as_str())) {
            return Err(HandlerError::new(format!(
                "invalid args for the {handler} handler: unknown field {unknown:?} (valid fields: {})",
                allowed.join(", ")
            )));
        }
        Ok(Args { handler, fields })
    }

    /// A field's value, `None` when absent or null.
    pub(crate) fn get(&self, field: &str) -> Option<&'a Value> {
        self.fields.get(field).filter(|value| !value.is_null())
    }

    /// The error for a bad `field`: "`args.field`: expected …, got …".
    pub(crate) fn invalid(&self, field: &str, expected: &str, got: &Value) -> HandlerError {
        HandlerError::new(format!(
            "invalid args for the {} handler: args.{field} must be {expected}, got {}",
            self.handler,
            short(got)
        ))
    }

    /// The error for a missing required `field`.
    pub(crate) fn missing(&self, field: &str, example: &str) -> HandlerError {
        HandlerError::new(format!(
            "invalid args for the {} handler: args.{field} is required, e.g. {example}",
            self.handler
        ))
    }

    /// An optional string field.
    pub(crate) fn string(&self, field: &str) -> Result<Option<&'a str>, HandlerError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(self.invalid(field, "a string", other)),
        }
    }
}

/// A value as JSON, cut short for an error message.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= 80 {
        text
    } else {
        format!("{}…", crate::output::head(&text, 80))
    }
}
