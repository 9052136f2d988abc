"""Small services written the way real ones are, to judge the analysis on apps nobody tuned for it."""
