//! `cronfleet openapi`: the REST API's OpenAPI document, as every coordinator serves it at
//! /api/v1/openapi.json, without a server (to generate a client, or to review the API).

use anyhow::Context;
use clap::Args;

use super::output;

/// Print the REST API's OpenAPI 3 document (JSON).
#[derive(Debug, Args)]
#[command(after_help = OPENAPI_EXAMPLES)]
pub struct OpenapiCommand {}

const OPENAPI_EXAMPLES: &str = "\
Examples:
  cronfleet openapi > cronfleet-openapi.json
  cronfleet openapi | jq '.paths | keys'
  curl -s http://127.0.0.1:8080/api/v1/openapi.json    # the same, from a running coordinator";

impl OpenapiCommand {
    pub fn run(self) -> anyhow::Result<()> {
        let document = cronfleet_coordinator::rest::openapi();
        let mut text =
            serde_json::to_string_pretty(&document).context("cannot encode the document")?;
        text.push('\n');
        output::print(&text)
    }
}
