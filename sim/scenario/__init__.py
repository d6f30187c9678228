"""What a user describes: the frozen, validated scenario (sections, YAML loading, dotted-key updates, Kubernetes manifests)."""
