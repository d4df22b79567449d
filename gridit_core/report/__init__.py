"""Reports: self-contained HTML pages (``page``) with their animations and figures embedded."""
