"""Deployment to Snowpark Container Services: deploy/config.yaml, the spec renderer, the SQL template variables."""
