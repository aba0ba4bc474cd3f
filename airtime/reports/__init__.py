"""Reports for staff: figures from set-based queries, drawn as server-side SVG and sold as CSV."""
