//! Builds environments with the Docker Engine (see DESIGN §1, §3). Filled in by the builder issue.
