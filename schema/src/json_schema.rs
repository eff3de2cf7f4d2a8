//! The JSON Schema of environment.json, for editors (`envbuild schema`).
//!
//! Written by hand rather than derived so the descriptions teach and so the shape matches
//! Cursor's own schema: closed top level, `build` and MCP server items, open `terminals` and
//! `ports` items, terminals as objects or groups (arrays) of objects, ports 1–65535, `build`
//! with a `dockerfile` or `dockerfileContents`, MCP servers with a `serverUrl` or `command`,
//! `enable_testing` as a boolean or the strings `"true"`/`"false"`. It uses draft-07 with
//! `additionalProperties`, which every editor understands, where Cursor's uses 2019-09
//! `unevaluatedProperties`; for this schema the two mean the same. `$schema` is allowed (with
//! a warning from `envbuild validate`, since Cursor rejects it) so an editor can be pointed at
//! this schema. The semantic checks (paths exist, names unique, precedence) are beyond JSON
//! Schema and stay in `envbuild validate`.

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
        "description": "How to build and boot a development environment: a base (a snapshot, an image, a Dockerfile, or the default base), an idempotent install command, a start command and long-running terminals; the agent's MCP servers, network and browser.",
        "allowComments": true,
        "allowTrailingCommas": false,
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "$schema": {
                "type": "string",
                "description": "The JSON Schema this file follows, for editors. envbuild accepts it with a warning: Cursor's own validator rejects it."
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
            "snapshot": {
                "type": "string",
                "description": "Start from this stored snapshot: an envbuild snapshot id (`sha256:...`), a unique prefix, or a ref name. Takes precedence over `image` and `build`. If it cannot be used (gone, damaged, no access), the environment starts from `image`, else `build`, else the default base, with a warning, and install still runs."
            },
            "image": {
                "type": "string",
                "description": "Start from this registry image, such as `node:22-bookworm`; it is resolved to its image id, which is what the cache key records. Takes precedence over `build`."
            },
            "build": {
                "type": "object",
                "description": "Build the system layer from a Dockerfile (system dependencies only; project dependencies belong in `install`). BuildKit is used: `RUN --mount=type=cache` and `RUN --mount=type=secret,id=NAME` (the secret `NAME` from `envbuild secrets`) work.",
                "anyOf": [{ "required": ["dockerfile"] }, { "required": ["dockerfileContents"] }],
                "additionalProperties": false,
                "properties": {
                    "dockerfile": {
                        "type": "string",
                        "description": "Path of the Dockerfile, relative to the folder that holds environment.json (`.cursor/`)."
                    },
                    "dockerfileContents": {
                        "type": "string",
                        "description": "The Dockerfile's text, inline, instead of a file."
                    },
                    "context": {
                        "type": "string",
                        "description": "Path of the build context, relative to `.cursor/` (the default); `.`, `./` and `..` mean the repository root. `.dockerignore` in the context is honoured."
                    }
                }
            },
            "agentCanUpdateSnapshot": {
                "type": "boolean",
                "description": "Whether the agent may update the snapshot. Defaults to true on a snapshot or the default base; always false on an `image` or `build` base. envbuild records it; snapshots themselves are immutable."
            },
            "disableAllMcpServers": {
                "type": "boolean",
                "description": "Turn off every MCP server for the agent."
            },
            "mcpServerAllowlist": {
                "type": "array",
                "description": "The MCP servers the agent may use, each named by a `serverUrl` or a `command`.",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "anyOf": [{ "required": ["serverUrl"] }, { "required": ["command"] }],
                    "properties": {
                        "name": { "type": "string", "description": "A name for the server." },
                        "serverUrl": { "type": "string", "description": "The server's URL, for a remote server." },
                        "command": { "type": "string", "description": "The command that runs a local server." },
                        "toolAllowlist": {
                            "type": "array",
                            "items": { "type": "string" },
                            "description": "The tools of this server the agent may call; all when absent."
                        }
                    }
                }
            },
            "egressAllowlist": {
                "type": "array",
                "items": { "type": "string" },
                "description": "Host names the environment may reach (`registry.npmjs.org`, `*.github.com`), beside what `egressMode` allows."
            },
            "egressMode": {
                "type": "string",
                "enum": ["allow_all", "parent_plus_network_settings", "default_with_network_settings", "network_settings_only"],
                "description": "How the environment reaches the network: everything, the parent's settings plus the network settings, the defaults plus the network settings, or the network settings alone."
            },
            "chromeExecutablePath": {
                "type": "string",
                "description": "Where Chrome or Chromium is in the environment, for browser testing."
            },
            "enable_testing": {
                "oneOf": [{ "type": "boolean" }, { "type": "string", "enum": ["true", "false"] }],
                "description": "Whether the agent may test in a browser (default true). The strings `\"true\"` and `\"false\"` are read as booleans.",
                "default": true
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
