"""Reports for admins (/reports): funnel, speed to lead, specialists, sources, utilisation."""
