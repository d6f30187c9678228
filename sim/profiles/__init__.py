"""Service-time profiles: reading and writing capsim.profile/1 files, profiles from served runs, roofline estimates."""
