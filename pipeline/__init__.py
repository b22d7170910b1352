"""Pipeline stages (crawl, subtitles, alignment, stats) and the machinery that runs them."""
