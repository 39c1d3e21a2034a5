"""The service's Pay-i proxy: provider requests forwarded upstream, with Block limits admitted first."""
