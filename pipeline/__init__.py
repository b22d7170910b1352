"""Pipeline stages, one subpackage each (crawl, subtitles, release, downstream, stats), and the runtime they share."""
