"""mmp-stats: reading every stage's outputs (read), the summary and tables (summary, text) and the HTML/Markdown report (report*)."""
