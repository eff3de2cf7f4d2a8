//! The JSON Schema of environment.json, for editors (`envbuild schema`).
//!
//! Written by hand rather than derived so the descriptions teach and so the shape matches
//! Cursor's own schema: closed top level and `build`, open `terminals` and `ports` items,
//! terminals as objects or groups (arrays) of objects, ports 1–65535. It uses draft-07 with
//! `additionalProperties`, which every editor understands, where Cursor's uses 2019-09
//! `unevaluatedProperties`; for this schema the two mean the same. `$schema` is allowed at the
//! top level so a file can point its editor at this schema. The semantic checks (paths exist,
//! names unique) are beyond JSON Schema and stay in `envbuild validate`.

use serde_json::{Value, json};

/// The schema as a JSON value.
pub fn json_schema() -> Value {
    let terminal = json!({
        "type": "object",
        "required": ["command"],
        "properties": {
            "name": {
                "type": "string",
                "description": "The terminal's name, unique in the file. `envbuild logs ENV NAME` shows its output."
            },
            "command": {
                "type": "string",
                "description": "A long-running command started after `start`, such as a dev server."
            },
            "description": {
                "type": "string",
                "description": "What the terminal does; shown to the agent."
            }
        }
    });
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://envbuild.dev/schemas/environment.schema.json",
        "title": "Cursor environment.json",
        "description": "How to build and boot a development environment: a Dockerfile (or a base snapshot), an idempotent install command, a start command and long-running terminals.",
        "allowComments": true,
        "allowTrailingCommas": false,
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "$schema": {
                "type": "string",
                "description": "The JSON Schema this file follows, for editors."
            },
            "name": {
                "type": "string",
                "description": "The name of the environment."
            },
            "user": {
                "type": "string",
                "description": "The user that install, start and the terminals run as (a name from the image's /etc/passwd, or uid[:gid]). Defaults to the image's USER."
            },
            "install": {
                "type": "string",
                "description": "Shell command (run with `sh -c` in /workspace) that installs the project's dependencies. It runs when the snapshot is built and again at every boot, so it must be idempotent, e.g. `npm ci` or `pip install -r requirements.txt`."
            },
            "start": {
                "type": "string",
                "description": "Shell command run at boot after install and before the terminals, e.g. starting a database."
            },
            "terminals": {
                "type": "array",
                "description": "Long-running processes started at boot, each in its own terminal. An item that is an array is a group of terminals shown side by side.",
                "items": {
                    "oneOf": [
                        terminal,
                        { "type": "array", "items": terminal }
                    ]
                }
            },
            "build": {
                "type": "object",
                "description": "Build the system layer from a Dockerfile.",
                "required": ["dockerfile"],
                "additionalProperties": false,
                "properties": {
                    "dockerfile": {
                        "type": "string",
                        "description": "Path of the Dockerfile, relative to the folder that holds environment.json (usually `.cursor/`)."
                    },
                    "context": {
                        "type": "string",
                        "description": "Path of the build context, relative to the folder that holds environment.json; that folder when absent. `..` is the repository root. `.dockerignore` in the context is honoured.",
                        "default": "."
                    }
                }
            },
            "snapshot": {
                "type": "string",
                "description": "Start from this snapshot instead of a Dockerfile: an envbuild snapshot id (`sha256:...`) or a ref name."
            },
            "agentCanUpdateSnapshot": {
                "type": "boolean",
                "description": "Whether the agent may update the snapshot. Recorded; envbuild itself never updates a snapshot in place (snapshots are immutable)."
            },
            "ports": {
                "type": "array",
                "description": "Ports the environment serves, like devcontainer port forwarding.",
                "items": {
                    "type": "object",
                    "required": ["port"],
                    "properties": {
                        "port": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 65535,
                            "description": "The port inside the container."
                        },
                        "name": {
                            "type": "string",
                            "description": "A name for the port, such as `web` or `api`."
                        }
                    }
                }
            },
            "repositoryDependencies": {
                "type": "array",
                "description": "Other repositories the environment needs access to, such as `github.com/org/repo`.",
                "items": { "type": "string" }
            }
        }
    })
}
