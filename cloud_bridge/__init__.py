"""CE-CoLLM cloud-edge collaboration (edgekit.cloud_bridge). Not built yet: see ARCHITECTURE.md."""
