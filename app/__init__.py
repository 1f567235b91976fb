"""Metamer Lab web app: participant pages, JSON API, admin panel and exports. Never imports torch."""
