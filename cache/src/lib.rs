//! The content-addressed snapshot store (see DESIGN §4). Filled in by the store issue.
