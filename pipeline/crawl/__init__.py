"""mmp-crawl: the list of videos, yt-dlp and its environment, track choice, polite fetching, the crawl's status taxonomy and its stage."""
