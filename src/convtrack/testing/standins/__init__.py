"""Local stand-ins for the ad platforms' APIs: real HTTP servers that check every request
against ../shared/reference/destinations.md and can inject faults."""
