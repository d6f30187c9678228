"""Service-time profiles: reading and writing capsim.profile files, profiles from served logs and runs, imports of
measurements taken elsewhere, roofline estimates and their residuals against measured GPU profiles."""
